"""Tensor-train family: cores over the modes (c_in, *kernel modes, c_out), in a tltorch ``TTTensor``."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._decompositions import tt_svd
from .._tltorch import TltorchFormat, TTTensor
from ..init import balance_norms
from .base import FactorizedLayer
from .cost import MEMORY_COST, Cost, Grid
from .energy import EnergyCurve
from .registry import register_family
from .separable import SeparableCarrier, carrier_spec
from .spec import DenseSpec


def _tt_shape(spec: DenseSpec) -> tuple[int, ...]:
    """TT mode order (c_in, *kernel modes > 1, c_out): the forward becomes a chain of small convs."""
    return (spec.in_channels, *spec.factor_kernel, spec.out_channels)


def _merges_kernel_cores(spec: DenseSpec, rank: tuple[int, ...]) -> bool:
    """Whether the forward convolves once by the merged kernel cores instead of once per kernel mode.

    Per output position, the chain over the d kernel modes costs Σ_j r_j·n_j·r_{j+1} MACs plus
    ``MEMORY_COST``·r_j for each of its d − 1 intermediate maps; one conv by the merged
    (r₁, n₁, …, n_d, r_{d+1}) kernel costs r₁·Π n_j·r_{d+1}. A float ratio gives r₂ ≈ 3r₁ ≈ 3r₃ on
    a 3×3 conv (the bounds (c_in, 3c_in, c_out) scaled alike), so merging halves the MACs and
    drops the widest map; a narrow middle bond (r₂ ≪ r₁, r₃) keeps the chain. Shapes only, so
    ``torch.compile`` traces it to a constant; strides are ignored (they only make the chain dearer).
    """
    d = len(spec.factor_kernel)
    if d < 2:
        return False
    bonds = rank[: d + 1]  # r₁ … r_{d+1}: the bonds the kernel cores connect
    chain = sum(a * n * b for a, n, b in zip(bonds, spec.factor_kernel, bonds[1:]))
    chain += MEMORY_COST * sum(bonds[1:-1])
    return bonds[0] * math.prod(spec.factor_kernel) * bonds[-1] < chain


class TTCarrier(SeparableCarrier):
    """The Table-2 block's pointwise tensor as a TT layer: its cores chain over (c_in, k, c_out) =
    (d₀, d₁, d₂), the official TT order; official bond ranks max(1, round(s·min(d_k, d_{k+1})))
    (Python's round: halves to even, as decomposed.py:36-37)."""

    @staticmethod
    def spec(dims: Sequence[int]) -> DenseSpec:
        d0, d1, d2 = dims
        return carrier_spec(d2, d0, d1)

    @staticmethod
    def to_modes(weight: Tensor) -> Tensor:
        return weight.movedim(0, -1)

    @staticmethod
    def from_modes(tensor: Tensor) -> Tensor:
        return tensor.movedim(-1, 0)

    @staticmethod
    def ranks_at_scale(dims: Sequence[int], scale: float) -> tuple[int, ...]:
        return tuple(max(1, int(round(scale * min(a, b)))) for a, b in zip(dims, dims[1:]))


@register_family("tt")
class TTLayer(FactorizedLayer):
    """W[o, i, h, w] = Σ G₁[i, a] G₂[a, h, b] G₃[b, w, c] G₄[c, o] with cores (r_{k-1}, n_k, r_k).

    One core per mode of (c_in, *kernel modes, c_out), the kernel modes being those of size > 1
    (:attr:`DenseSpec.factor_kernel`: a Conv1d or (1, k) Conv2d has one, a Conv3d up to three,
    Linear and 1×1 none). Forward on a conv (Garipov et al. 2016 order): 1-tap conv c_in→r₁, one
    conv per kernel mode (k_h×1 r₁→r₂, 1×k_w r₂→r₃), 1-tap conv r₃→c_out; where cheaper
    (:func:`_merges_kernel_cores`, e.g. any float ratio on a 3×3 conv) the kernel cores are first
    contracted into one k_h×k_w kernel r₁→r₃ and the middle is a single conv. ‖W‖²_F by contracting
    the chain of core Gram matrices, O(Σ n_k r³). Spectral init: TT-SVD, then balanced core norms.

    Rank: tuple of internal ranks ``(r₁, r₂, r₃)``, one per bond (``rank_names(spec)``; ``(r₁,)``
    for Linear and 1×1); an int gives all equal; a float is a parameter ratio reached by scaling
    every rank proportionally to its full-rank bound min(Π_{j≤k} n_j, Π_{j>k} n_j)
    (tensorly-torch's auto-rank undershoots).

    Training with Frobenius decay: call :func:`tdecomp.rebalance` after each optimizer step (the
    trainer does under ``reg=fd``); it equalizes the core norms (G_k·c, G_{k+1}/c leave W
    unchanged and FD cannot see them, so SGD would drift along them).
    """

    # tltorch's TT modes are ours, (c_in, *kernel, c_out), with the boundary ranks 1 included
    tltorch = TltorchFormat("tt", rank=lambda rank: (1, *rank, 1))

    separable = TTCarrier
    factor_inits = ("kaiming-factors",)

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        names = ("c_in", *spec.mode_names, "c_out")
        return tuple(f"{a}|{b}" for a, b in zip(names, names[1:]))

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        shape = _tt_shape(spec)
        return tuple(
            min(math.prod(shape[: k + 1]), math.prod(shape[k + 1 :])) for k in range(len(shape) - 1)
        )

    @classmethod
    def _feasible(cls, spec: DenseSpec, ranks: tuple[int, ...]) -> tuple[int, ...]:
        """r_k ≤ r_{k-1}·n_k and r_k ≤ n_{k+1}·r_{k+1}: what TT-SVD can reach."""
        shape, full = _tt_shape(spec), [1, *ranks, 1]
        for k in range(1, len(full) - 1):
            full[k] = min(full[k], full[k - 1] * shape[k - 1])
        for k in range(len(full) - 2, 0, -1):
            full[k] = min(full[k], shape[k] * full[k + 1])
        return tuple(full[1:-1])

    @classmethod
    def _ranks_at_scale(cls, spec: DenseSpec, scale: float, **options: Any) -> tuple[int, ...]:
        return cls._clamp(spec, [round(scale * m) for m in cls.max_ranks(spec)])

    @classmethod
    def _ranks_from_int(cls, spec: DenseSpec, rank: int, **options: Any) -> tuple[int, ...]:
        return (rank,) * (len(_tt_shape(spec)) - 1)

    @classmethod
    def energy_curves(cls, spec: DenseSpec, weight: Tensor, **options: Any) -> list[EnergyCurve | None]:
        """σ_j² of the sequential unfoldings (Π_{j≤k} n_j) × (Π_{j>k} n_j) in the TT mode order (TT-SVD:
        the sum of their truncation errors bounds its error)."""
        tensor = weight.reshape(spec.tensor_shape)
        total = tensor.square().sum()
        chain, shape = tensor.movedim(0, -1), _tt_shape(spec)
        return [EnergyCurve.of_unfolding(chain.reshape(math.prod(shape[: k + 1]), -1), total)
                for k in range(len(shape) - 1)]

    @classmethod
    def count_params(cls, spec: DenseSpec, rank, **options: Any) -> int:
        full = (1, *rank, 1)
        return sum(a * n * b for a, n, b in zip(full, _tt_shape(spec), full[1:]))

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        shape, full = _tt_shape(self.spec), (1, *rank, 1)
        cores = [nn.Parameter(torch.empty(a, n, b, **factory)) for a, n, b in zip(full, shape, full[1:])]
        self.decomposition = TTTensor(cores, shape=shape, rank=full)

    @property
    def rank(self) -> tuple[int, ...]:
        return tuple(self.decomposition.rank[1:-1])

    def factors(self) -> list[Tensor]:
        return list(self.decomposition.factors)

    def reconstruct(self) -> Tensor:
        cores = list(self.decomposition.factors)
        out = cores[0].reshape(cores[0].shape[1], -1)
        for core in cores[1:]:
            out = (out @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
        tensor = out.reshape(_tt_shape(self.spec))  # (c_in, *kernel modes, c_out)
        return tensor.movedim(-1, 0).reshape(self.spec.weight_shape)

    def frobenius_sq(self) -> Tensor:
        # Gram of the left part, (r_k, r_k): Γ_k = Σ_{a,n} (Γ_{k−1} G_k)[a, n, :]ᵀ G_k[a, n, :], as two
        # plain matmuls per core (einsum's dispatch dominated this O(Σ n_k r³) term).
        gram = None
        for core in self.decomposition.factors:
            a, n, b = core.shape
            rows = core.reshape(a * n, b)
            left = rows if gram is None else (gram @ core.reshape(a, n * b)).reshape(a * n, b)
            gram = left.T @ rows
        return gram.squeeze()


    def _forward_factorized(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        first, *middle, last = self.decomposition.factors
        z = self._mix(x, first[0].T)
        if _merges_kernel_cores(self.spec, self.rank):
            with self._weight_precision(x):
                kernel = functools.reduce(lambda a, b: torch.tensordot(a, b, 1), middle)  # (r₁, n₁…n_d, r_{d+1})
            z = self._conv(z, kernel.movedim(-1, 0), range(len(middle)), pad)
        else:
            for mode, core in enumerate(middle):
                z = self._conv(z, core.permute(2, 0, 1), (mode,), pad)  # kernel (r_k, r_{k-1}, n_k)
        return self._mix(z, last[:, :, 0].T)

    @torch.no_grad()
    def init_spectral(self, weight: Tensor) -> None:
        tensor = weight.to(self.decomposition.factors[0].dtype).reshape(self.spec.tensor_shape)
        cores = tt_svd(tensor.movedim(0, -1), self.rank)
        for p, t in zip(self.decomposition.factors, cores):
            p.copy_(t)
        balance_norms(self.factors())

    def input_factor(self) -> tuple[Tensor, int]:
        """The first core (1, c_in, r₁): whitened SI whitens the c_in mode."""
        return self.decomposition.factors[0], 1

    def _random_init_terms(self) -> int:
        return math.prod(self.rank)

    @torch.no_grad()
    def init_factors(self, kind: str) -> None:
        """``"kaiming-factors"``: each core N(0, 2/fan_in) as the map it applies in the forward chain —
        the first √(2/c_in) (c_in → r₁), kernel core j √(2/(r_{j−1}·n_j)) (its k_j-tap conv
        r_{j−1} → r_j), the last √(2/r_last) (r_last → c_out)."""
        self._check_factor_init(kind)
        *cores, last = self.factors()
        for core in cores:
            core.normal_(0.0, math.sqrt(2.0 / (core.shape[0] * core.shape[1])))
        last.normal_(0.0, math.sqrt(2.0 / last.shape[0]))

    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: Grid, **options: Any) -> Cost:
        """1-tap conv c_in→r₁ on the input grid, the conv over kernel mode j on the grid with
        modes ≤ j strided (k_h×1 r₁→r₂ on (h_out, w_in), 1×k_w r₂→r₃ on (h_out, w_out)), 1-tap conv
        to c_out on the output grid. Merged kernel cores (:func:`_merges_kernel_cores`): one conv
        r₁→r_{d+1} on the output grid, after building its r₁·Π n_j·r_{d+1} kernel per call (step k
        of the chain product: (r₁·n₁…n_{k−1}, r_k) times (r_k, n_k·r_{k+1}))."""
        d = len(spec.factor_kernel)
        full = (1, *rank, 1)
        shape = _tt_shape(spec)
        if _merges_kernel_cores(spec, rank):
            kernel = rank[0] * math.prod(spec.factor_kernel) * rank[d]
            build = sum(rank[0] * math.prod(spec.factor_kernel[:k]) * rank[k] * spec.factor_kernel[k] * rank[k + 1]
                        for k in range(1, d))
            macs = grid.positions() * spec.in_channels * rank[0] + grid.out * (kernel + rank[d] * spec.out_channels)
            activations = grid.positions() * rank[0] + grid.out * rank[d]
            return Cost(macs, activations, build, kernel, 3 + (d - 1))
        grids = (*(grid.positions(range(j)) for j in range(d + 1)), grid.out)
        macs = sum(g * a * n * b for g, a, n, b in zip(grids, full, shape, full[1:]))
        activations = sum(g * b for g, b in zip(grids, full[1:-1]))
        return Cost(macs, activations, 0, 0, len(shape))

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...], **options: Any) -> int:
        """Chain product: step k multiplies (Π_{j<k} n_j, r_{k−1}) by (r_{k−1}, n_k·r_k)."""
        full, shape = (1, *rank, 1), _tt_shape(spec)
        return sum(math.prod(shape[:k]) * full[k] * shape[k] * full[k + 1] for k in range(1, len(shape)))

    def inner(self, other: Sequence[Tensor]) -> Tensor:
        """⟨W, W'⟩ by contracting the chain of cross-Gram matrices Σ G_k ⊗ G'_k (r_k, r'_k):
        O(Σ n_k r³)."""
        gram = None  # Σ over the left part: (r_k, r'_k)
        for core, other_core in zip(self.decomposition.factors, other):
            if gram is None:
                gram = torch.einsum("anb,anc->bc", core, other_core)
            else:
                gram = torch.einsum("cnb,cnd->bd", torch.einsum("ac,anb->cnb", gram, core), other_core)
        return gram.squeeze()

    def balancedness(self) -> Tensor:
        """(Σ_k ‖G_kᴿᵀG_kᴿ − G_{k+1}ᴸG_{k+1}ᴸᵀ‖²_F)^{1/2} over the bonds k of the chain, with
        G_kᴿ = G_k reshaped to (r_{k-1}·n_k, r_k) and G_{k+1}ᴸ = G_{k+1} reshaped to (r_k, n_{k+1}·r_{k+1}).

        W is invariant under G_k → G_k A, G_{k+1} → A⁻¹G_{k+1} on bond k, so gradient flow
        conserves each of these r_k × r_k differences.
        """
        cores = list(self.decomposition.factors)
        diffs = []
        for left, right in zip(cores, cores[1:]):
            rows = left.reshape(-1, left.shape[-1])
            cols = right.reshape(right.shape[0], -1)
            diffs.append(torch.linalg.matrix_norm(rows.T @ rows - cols @ cols.T))
        return torch.stack(diffs).norm()
