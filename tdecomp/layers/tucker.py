"""Tucker family: W = G ×₁ U_out ×₂ U_in ×₃ U_h ×₄ U_w, stored in a tltorch ``TuckerTensor``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._decompositions import tucker_hooi
from .._tltorch import TuckerTensor
from ..init import balance_norms
from .base import Cost, FactorizedLayer, register_family
from .spec import DenseSpec

_SMALL_KERNEL = 3


def _mode_products(core: Tensor, matrices: list[Tensor]) -> Tensor:
    """core ×₁ M₁ ×₂ M₂ … with M_k (n_k, r_k): each step contracts the leading mode and appends n_k."""
    out = core
    for m in matrices:
        out = torch.tensordot(out, m, dims=([0], [1]))
    return out


@register_family("tucker")
class TuckerLayer(FactorizedLayer):
    """Tucker weight with core (r_out, r_in[, r_h, r_w]) and factors U_k (n_k, r_k).

    Forward on a conv: 1×1 conv c_in→r_in (U_inᵀ), one k_h×k_w conv r_in→r_out with the small
    kernel G ×₃ U_h ×₄ U_w, then 1×1 conv r_out→c_out (U_out). ‖W‖²_F = ⟨G ×_k U_kᵀU_k, G⟩.
    Spectral init: HOOI started from HOSVD (so its error is at most HOSVD's), then balanced.

    Rank: tuple ``(r_out, r_in, r_h, r_w)`` (``(r_out, r_in)`` for Linear); an int r gives
    ``(r, r, …)``; a float is a parameter ratio reached by scaling r_out, r_in proportionally to
    c_out, c_in. Option ``fixed_spatial`` keeps the spatial modes at full rank; by default it is
    on for kernels up to 3×3 (tensorly-torch's float rank squashes those modes).
    """

    @staticmethod
    def _fixed_spatial(spec: DenseSpec, fixed_spatial: bool | None) -> bool:
        if fixed_spatial is None:
            return max(spec.kernel_size) <= _SMALL_KERNEL
        return bool(fixed_spatial)

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        return ("c_out", "c_in", "k_h", "k_w")[: len(spec.weight_shape)]

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        return spec.weight_shape

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
        cls, spec: DenseSpec, scale: float, fixed_spatial: bool | None = None, **options: Any
    ) -> tuple[int, ...]:
        fixed = cls._fixed_spatial(spec, fixed_spatial)
        ranks = [round(scale * n) for n in spec.weight_shape[:2]]
        ranks += [k if fixed else round(scale * k) for k in spec.spatial]
        return cls._clamp(spec, ranks)

    @classmethod
    def _ranks_from_int(
        cls, spec: DenseSpec, rank: int, fixed_spatial: bool | None = None, **options: Any
    ) -> tuple[int, ...]:
        fixed = cls._fixed_spatial(spec, fixed_spatial)
        return (rank, rank, *(k if fixed else rank for k in spec.spatial))

    @classmethod
    def count_params(cls, spec: DenseSpec, rank, **options: Any) -> int:
        return math.prod(rank) + sum(n * r for n, r in zip(spec.weight_shape, rank))

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        shape = self.spec.weight_shape
        core = nn.Parameter(torch.empty(rank, **factory))
        factors = [nn.Parameter(torch.empty(n, r, **factory)) for n, r in zip(shape, rank)]
        self.weight = TuckerTensor(core, factors, shape=shape, rank=rank)

    @property
    def rank(self) -> tuple[int, ...]:
        return tuple(self.weight.rank)

    def factors(self) -> list[Tensor]:
        return [self.weight.core, *self.weight.factors]

    def reconstruct(self) -> Tensor:
        return _mode_products(self.weight.core, list(self.weight.factors))

    def frobenius_sq(self) -> Tensor:
        core = self.weight.core
        grams = [u.T @ u for u in self.weight.factors]
        return (_mode_products(core, grams) * core).sum()

    def _forward_factorized(self, x: Tensor, pad: tuple[int, int]) -> Tensor:
        u_out, u_in, *spatial = self.weight.factors
        z = self._mix(x, u_in.T)
        if self.spec.is_conv:
            u_h, u_w = spatial
            kernel = torch.einsum("abcd,hc,wd->abhw", self.weight.core, u_h, u_w)
            z = self._conv(z, kernel, "hw", pad)
        else:
            z = self._mix(z, self.weight.core)
        return self._mix(z, u_out)

    @torch.no_grad()
    def init_spectral(self, weight: Tensor) -> None:
        core, factors = tucker_hooi(weight.to(self.weight.core.dtype), self.rank)
        for p, t in zip(self.factors(), [core, *factors]):
            p.copy_(t)
        balance_norms(self.factors())

    def _random_init_terms(self) -> int:
        return math.prod(self.rank)

    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: tuple[int, int, int, int]) -> Cost:
        """1×1 conv c_in→r_in on (h_in, w_in), k_h×k_w conv r_in→r_out and 1×1 conv r_out→c_out on
        (h_out, w_out); per call the r_out·r_in·k_h·k_w kernel G ×₃ U_h ×₄ U_w."""
        r_out, r_in, *r_spatial = rank
        h_in, w_in, h_out, w_out = grid
        kernel = r_out * r_in * math.prod(spec.spatial)
        build = r_out * r_in * spec.spatial[0] * r_spatial[1] * (r_spatial[0] + spec.spatial[1]) if spec.is_conv else 0
        macs = h_in * w_in * spec.in_channels * r_in + h_out * w_out * (kernel + r_out * spec.out_channels)
        activations = h_in * w_in * r_in + h_out * w_out * r_out
        return Cost(macs, activations, build, kernel if spec.is_conv else 0, 3 + spec.is_conv)

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...]) -> int:
        """Mode product k maps the (r_k, …, r_N, n_1, …, n_{k−1}) tensor's r_k to n_k."""
        shape, total = spec.weight_shape, 0
        for k, n in enumerate(shape):
            total += math.prod(rank[k:]) * math.prod(shape[:k]) * n
        return total

    def inner(self, other: Sequence[Tensor]) -> Tensor:
        """⟨W, W'⟩ = ⟨G ×_k U'_kᵀU_k, G'⟩ for ``other`` = [G', U'_1, …]. O(Σ n_k r_k² + r·Σ r_k)."""
        core, *factors = other
        cross = [b.T @ a for a, b in zip(self.weight.factors, factors)]
        return (_mode_products(self.weight.core, cross) * core).sum()

    def balancedness(self) -> Tensor:
        """(Σ_k ‖U_kᵀU_k − G₍ₖ₎G₍ₖ₎ᵀ‖²_F)^{1/2}, G₍ₖ₎ the mode-k unfolding (r_k, Π_{j≠k} r_j).

        W is invariant under U_k → U_k A⁻¹, G → G ×_k A, so gradient flow conserves each
        U_kᵀU_k − G₍ₖ₎G₍ₖ₎ᵀ (the Tucker analog of UᵀU − VᵀV).
        """
        core = self.weight.core
        diffs = []
        for k, u in enumerate(self.weight.factors):
            unfolding = core.movedim(k, 0).reshape(core.shape[k], -1)
            diffs.append(torch.linalg.matrix_norm(u.T @ u - unfolding @ unfolding.T))
        return torch.stack(diffs).norm()

    def singular_values(self) -> Tensor:
        """With U_k = Q_k R_k: W = (G ×_k R_k) ×_k Q_k and the Q_k have orthonormal columns, so W₍ₘₐₜ₎
        shares its singular values with the matricized small tensor G ×_k R_k. O(Σ n_k r_k² + r³)."""
        small = _mode_products(self.weight.core, [torch.linalg.qr(u)[1] for u in self.weight.factors])
        if self.spec.is_conv:
            a, b, c, d = small.shape
            small = small.permute(0, 2, 1, 3).reshape(a * c, b * d)
        return torch.linalg.svdvals(small)
