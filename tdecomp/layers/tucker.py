"""Tucker family: W = G ×₁ U_out ×₂ U_in ×₃ U_h ×₄ U_w, stored in a tltorch ``TuckerTensor``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._decompositions import tucker_hooi
from .._tltorch import TltorchFormat, TuckerTensor
from ..init import balance_norms, balanced_std, equalizing_scales
from .attention.geometry import AttentionSpec
from .attention.heads import HeadProducts, register_heads
from .base import FactorizedLayer
from .cost import Cost, Grid
from .energy import EnergyCurve
from .options import FamilyOption
from .registry import register_family
from .separable import SeparableCarrier, carrier_spec
from .spec import DenseSpec

FIXED_SPATIAL = FamilyOption(
    "fixed_spatial", bool, True, "keep the kernel modes at full rank, so a ratio spends the budget on channels "
    "(false: scale them like the channels, as tensorly-torch's float rank)")


def _tltorch_fixed_modes(spec: DenseSpec, fixed_spatial: bool = FIXED_SPATIAL.default, **options: Any) -> dict:
    """tltorch ``from_conv`` options keeping the kernel modes at full rank when ``fixed_spatial`` does
    here (tltorch's float rank squashes them otherwise)."""
    return {"fixed_rank_modes": tuple(range(2, 2 + spec.n_spatial))} if fixed_spatial else {}


def _mode_products(core: Tensor, matrices: list[Tensor]) -> Tensor:
    """core ×₁ M₁ ×₂ M₂ … with M_k (n_k, r_k): each step contracts the leading mode and appends n_k."""
    out = core
    for m in matrices:
        out = torch.tensordot(out, m, dims=([0], [1]))
    return out


def _kernel(core: Tensor, spatial: list[Tensor]) -> Tensor:
    """The conv kernel G ×₃ U_1 ×₄ U_2 … (r_out, r_in, *k) of core G (r_out, r_in, *r_k), U_j (k_j, r_j)."""
    out = core
    for j, u in enumerate(spatial):
        out = torch.tensordot(out, u, dims=([2 + j], [1])).movedim(-1, 2 + j)
    return out


class TuckerCarrier(SeparableCarrier):
    """The Table-2 block's pointwise tensor as a Tucker layer: ``tensor_shape`` (c_out, c_in, k) =
    (d₀, d₁, d₂), the modes in order; official mode ranks max(1, round(s·d_k)) (Python's round:
    halves to even, as decomposed.py:36-37)."""

    @staticmethod
    def spec(dims: Sequence[int]) -> DenseSpec:
        return carrier_spec(*dims)

    @staticmethod
    def to_modes(weight: Tensor) -> Tensor:
        return weight

    @staticmethod
    def from_modes(tensor: Tensor) -> Tensor:
        return tensor

    @staticmethod
    def ranks_at_scale(dims: Sequence[int], scale: float) -> tuple[int, ...]:
        return tuple(max(1, int(round(scale * d))) for d in dims)


@register_family("tucker")
class TuckerLayer(FactorizedLayer):
    """Tucker weight with core (r_out, r_in, *r_kernel) and factors U_k (n_k, r_k).

    The modes are :attr:`DenseSpec.tensor_shape`: (c_out, c_in, k_h, k_w) for a 3×3 conv,
    (c_out, c_in, k) for a Conv1d or a (1, k) Conv2d, (c_out, c_in, k_d, k_h, k_w) for a Conv3d,
    (c_out, c_in) for Linear and 1×1 (a size-1 kernel axis gets no U). Forward on a conv: 1-tap
    conv c_in→r_in (U_inᵀ), one conv r_in→r_out over the kernel modes with the small kernel
    G ×₃ U_h ×₄ U_w (…), then 1-tap conv r_out→c_out (U_out); without kernel modes the middle is
    the mix by G. ‖W‖²_F = ⟨G ×_k U_kᵀU_k, G⟩. Spectral init: HOOI started from HOSVD (so its
    error is at most HOSVD's), then balanced.

    Rank: one entry per mode, ``rank_names(spec)`` (e.g. ``(r_out, r_in, r_h, r_w)``,
    ``(r_out, r_in)`` for Linear); an int r gives ``(r, r, *kernel)``; a float is a parameter
    ratio reached by scaling r_out, r_in proportionally to c_out, c_in. Option ``fixed_spatial``
    (default ``True``, any kernel shape) keeps the kernel modes at full rank so the budget is
    spent on channels: kernel modes are small, and squashing them (tensorly-torch's float rank;
    ``fixed_spatial=False`` scales them like the channels) leaves e.g. a 1×5 kernel one shared
    5-tap filter. Explicit tuples are kept.

    Training with Frobenius decay: call :func:`tdecomp.rebalance` after each optimizer step
    (the trainer does under ``reg=fd``). FD sees only W, so SGD drifts along the rescalings
    G ×_k c_k, U_k/c_k; a small factor (e.g. a 1×1 one, before size-1 modes were folded into the
    core) shrank to 0 and the next step overshot to NaN in 13 of 16 runs of issue 15
    (``docs/dynamics.md``).
    """

    tltorch = TltorchFormat("tucker", rank=tuple, from_conv_options=_tltorch_fixed_modes)

    options = (FIXED_SPATIAL,)
    factor_inits = ("kaiming-factors",)
    separable = TuckerCarrier

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        return ("c_out", "c_in", *spec.mode_names)

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        return spec.tensor_shape

    @classmethod
    def _feasible(cls, spec: DenseSpec, ranks: tuple[int, ...]) -> tuple[int, ...]:
        """r_k ≤ Π_{j≠k} r_j: a larger r_k exceeds the rank of the core's mode-k unfolding."""
        ranks = list(ranks)
        changed = True
        while changed:
            changed = False
            for k, r in enumerate(ranks):
                bound = math.prod(ranks) // r
                if r > bound:
                    ranks[k], changed = bound, True
        return tuple(ranks)

    @classmethod
    def _ranks_at_scale(
        cls, spec: DenseSpec, scale: float, fixed_spatial: bool = FIXED_SPATIAL.default, **options: Any
    ) -> tuple[int, ...]:
        ranks = [round(scale * n) for n in spec.tensor_shape[:2]]
        ranks += [k if fixed_spatial else round(scale * k) for k in spec.factor_kernel]
        return cls._clamp(spec, ranks)

    @classmethod
    def _ranks_from_int(
        cls, spec: DenseSpec, rank: int, fixed_spatial: bool = FIXED_SPATIAL.default, **options: Any
    ) -> tuple[int, ...]:
        return (rank, rank, *(k if fixed_spatial else rank for k in spec.factor_kernel))

    @classmethod
    def energy_curves(cls, spec: DenseSpec, weight: Tensor, fixed_spatial: bool = FIXED_SPATIAL.default,
                      **options: Any) -> list[EnergyCurve | None]:
        """σ_j² of each mode-k unfolding (HOSVD: its truncation error bounds HOOI's); ``None`` for the
        kernel modes under ``fixed_spatial`` (kept at full rank)."""
        tensor = weight.reshape(spec.tensor_shape)
        total = tensor.square().sum()
        return [
            None if fixed_spatial and k >= 2 else EnergyCurve.of_unfolding(tensor.movedim(k, 0).reshape(n, -1), total)
            for k, n in enumerate(spec.tensor_shape)
        ]

    @classmethod
    def count_params(cls, spec: DenseSpec, rank, **options: Any) -> int:
        return math.prod(rank) + sum(n * r for n, r in zip(spec.tensor_shape, rank))

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        shape = self.spec.tensor_shape
        core = nn.Parameter(torch.empty(rank, **factory))
        factors = [nn.Parameter(torch.empty(n, r, **factory)) for n, r in zip(shape, rank)]
        self.decomposition = TuckerTensor(core, factors, shape=shape, rank=rank)

    @property
    def rank(self) -> tuple[int, ...]:
        return tuple(self.decomposition.rank)

    def factors(self) -> list[Tensor]:
        return [self.decomposition.core, *self.decomposition.factors]

    def reconstruct(self) -> Tensor:
        return _mode_products(self.decomposition.core, list(self.decomposition.factors)).reshape(self.spec.weight_shape)

    def frobenius_sq(self) -> Tensor:
        core = self.decomposition.core
        grams = [u.T @ u for u in self.decomposition.factors]
        return (_mode_products(core, grams) * core).sum()

    def _forward_factorized(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        u_out, u_in, *spatial = self.decomposition.factors
        z = self._mix(x, u_in.T)
        if spatial:
            with self._weight_precision(x):
                kernel = _kernel(self.decomposition.core, spatial)
            z = self._conv(z, kernel, range(len(spatial)), pad)
        else:
            z = self._mix(z, self.decomposition.core)
        return self._mix(z, u_out)

    @torch.no_grad()
    def init_spectral(self, weight: Tensor) -> None:
        core, factors = tucker_hooi(weight.to(self.decomposition.core.dtype).reshape(self.spec.tensor_shape), self.rank)
        for p, t in zip(self.factors(), [core, *factors]):
            p.copy_(t)
        balance_norms(self.factors())

    def input_factor(self) -> tuple[Tensor, int]:
        """U_in (c_in, r_in): whitened SI whitens the c_in mode."""
        return self.decomposition.factors[1], 0

    def _random_init_terms(self) -> int:
        return math.prod(self.rank)

    @torch.no_grad()
    def init_factors(self, kind: str) -> None:
        """``"kaiming-factors"``: each factor N(0, 2/fan_in) as the map it applies in the forward —
        U_in √(2/c_in) (c_in → r_in), the core √(2/(r_in·Π r_kernel)) (the r_in → r_out conv over
        the kernel modes), each kernel factor U_j √(2/r_j) (r_j → k_j), U_out √(2/r_out)."""
        self._check_factor_init(kind)
        core, u_out, u_in, *spatial = self.factors()
        u_in.normal_(0.0, math.sqrt(2.0 / u_in.shape[0]))
        core.normal_(0.0, math.sqrt(2.0 / math.prod(core.shape[1:])))
        for u in spatial:
            u.normal_(0.0, math.sqrt(2.0 / u.shape[1]))
        u_out.normal_(0.0, math.sqrt(2.0 / u_out.shape[1]))

    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: Grid, **options: Any) -> Cost:
        """1-tap conv c_in→r_in on the input grid, the conv r_in→r_out over the kernel modes and
        1-tap conv r_out→c_out on the output grid; per call the r_out·r_in·Π k kernel
        G ×₃ U_h ×₄ U_w … (mode j maps (r_out, r_in, k_<j, r_≥j) to k_j: that size × k_j MACs)."""
        r_out, r_in, *r_kernel = rank
        d = len(r_kernel)
        kernel = r_out * r_in * math.prod(spec.factor_kernel)
        build = sum(
            r_out * r_in * math.prod(spec.factor_kernel[:j]) * math.prod(r_kernel[j:]) * spec.factor_kernel[j]
            for j in range(d)
        )
        macs = grid.positions() * spec.in_channels * r_in + grid.out * (kernel + r_out * spec.out_channels)
        activations = grid.positions() * r_in + grid.out * r_out
        return Cost(macs, activations, build, kernel if d else 0, 3 + (d > 0))

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...], **options: Any) -> int:
        """Mode product k maps the (r_k, …, r_N, n_1, …, n_{k−1}) tensor's r_k to n_k."""
        shape, total = spec.weight_shape, 0
        for k, n in enumerate(shape):
            total += math.prod(rank[k:]) * math.prod(shape[:k]) * n
        return total

    def inner(self, other: Sequence[Tensor]) -> Tensor:
        """⟨W, W'⟩ = ⟨G ×_k U'_kᵀU_k, G'⟩ for ``other`` = [G', U'_1, …]. O(Σ n_k r_k² + r·Σ r_k)."""
        core, *factors = other
        cross = [b.T @ a for a, b in zip(self.decomposition.factors, factors)]
        return (_mode_products(self.decomposition.core, cross) * core).sum()

    def balancedness(self) -> Tensor:
        """(Σ_k ‖U_kᵀU_k − G₍ₖ₎G₍ₖ₎ᵀ‖²_F)^{1/2}, G₍ₖ₎ the mode-k unfolding (r_k, Π_{j≠k} r_j).

        W is invariant under U_k → U_k A⁻¹, G → G ×_k A, so gradient flow conserves each
        U_kᵀU_k − G₍ₖ₎G₍ₖ₎ᵀ (the Tucker analog of UᵀU − VᵀV).
        """
        core = self.decomposition.core
        diffs = []
        for k, u in enumerate(self.decomposition.factors):
            unfolding = core.movedim(k, 0).reshape(core.shape[k], -1)
            diffs.append(torch.linalg.matrix_norm(u.T @ u - unfolding @ unfolding.T))
        return torch.stack(diffs).norm()

    def singular_values(self) -> Tensor:
        """With U_k = Q_k R_k: W = (G ×_k R_k) ×_k Q_k and the Q_k have orthonormal columns, so W₍ₘₐₜ₎
        shares its singular values with the small tensor G ×_k R_k unfolded the same way
        (:meth:`DenseSpec.unfold`). O(Σ n_k r_k² + r³)."""
        small = _mode_products(self.decomposition.core, [torch.linalg.qr(u)[1] for u in self.decomposition.factors])
        return torch.linalg.svdvals(self.spec.unfold(small))


@register_heads(TuckerLayer)
class TuckerHeads(HeadProducts):
    """Tucker across heads: M_h = U G_h Vᵀ, U (m, r_left), V (n, r_right) shared by all heads,
    core G (H, r_left, r_right).

    This is the Tucker decomposition of the stacked products (H, m, n) with the head mode kept
    at full rank (a head factor would be absorbed by the core). L_h = U G_h, R_h = V: the heads
    share one key (value) projection, as in multi-query attention, and differ by their core
    slice. SI: HOOI of the stacked products, then balanced factor norms; under Frobenius decay
    :func:`tdecomp.rebalance` keeps them balanced after each optimizer step.
    """

    @classmethod
    def rank_names(cls) -> tuple[str, ...]:
        return ("r_left", "r_right")

    @classmethod
    def max_ranks(cls, spec: AttentionSpec) -> tuple[int, ...]:
        return (spec.embed_dim, max(spec.kdim, spec.vdim))

    @classmethod
    def effective_rank(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> tuple[int, ...]:
        """r_left ≤ m, r_right ≤ n, and each ≤ H × the other: a core (H, r_l, r_r) cannot have
        unfoldings of larger rank, so larger factors would be redundant (and HOOI could not fill them)."""
        r_left, r_right = min(rank[0], m), min(rank[1], n)
        return min(r_left, heads * r_right), min(r_right, heads * r_left)

    @classmethod
    def count_params(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> int:
        r_left, r_right = cls.effective_rank(heads, m, n, rank)
        return m * r_left + n * r_right + heads * r_left * r_right

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        r_left, r_right = rank
        self.core = nn.Parameter(torch.empty(self.heads, r_left, r_right, **factory))
        self.U = nn.Parameter(torch.empty(self.m, r_left, **factory))
        self.V = nn.Parameter(torch.empty(self.n, r_right, **factory))

    @property
    def rank(self) -> tuple[int, ...]:
        return tuple(self.core.shape[1:])

    def left(self) -> Tensor:
        return self.U @ self.core

    def right(self) -> Tensor:
        return self.V.expand(self.heads, -1, -1)

    @torch.no_grad()
    def init_spectral(self, products: Tensor) -> None:
        core, (heads, u, v) = tucker_hooi(products.to(self.U.dtype), (self.heads, *self.rank))
        self.core.copy_(torch.einsum("ha,abc->hbc", heads, core))
        self.U.copy_(u)
        self.V.copy_(v)
        balance_norms([self.core, self.U, self.V])

    @torch.no_grad()
    def init_random(self, std: float) -> None:
        s = balanced_std(std, math.prod(self.rank), 3)
        for p in (self.core, self.U, self.V):
            p.normal_(0.0, s)

    def balancing_scales(self) -> tuple[list[tuple[nn.Parameter, Tensor]], Tensor | float]:
        """Equal norms of G, U, V (Π c = 1, products unchanged): three factors drift under FD
        with SGD as a Tucker layer's do (:func:`tdecomp.rebalance`). R_h = V scales by c_V."""
        factors = [self.core, self.U, self.V]
        scales = equalizing_scales(torch.stack([f.norm() for f in factors]))
        return list(zip(factors, scales)), scales[2]
