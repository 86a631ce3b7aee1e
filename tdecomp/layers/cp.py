"""CP (CANDECOMP/PARAFAC) family: W = Σ_r a_r ∘ b_r ∘ c_r ∘ d_r, stored in a tltorch ``CPTensor``."""

from __future__ import annotations

import string
from typing import Any

import torch
from torch import Tensor, nn

from .._decompositions import _hadamard_grams, cp_als
from .._tltorch import CPTensor
from .base import FactorizedLayer, register_family
from .spec import DenseSpec


@register_family("cp")
class CPLayer(FactorizedLayer):
    """Rank-R CP weight: factors A_k (n_k, R) for the modes (c_out, c_in[, k_h, k_w]).

    The CP weights λ are a buffer fixed at 1 (the scale lives in the balanced factors), so the
    layer has R·Σn_k parameters. Forward on a conv: 1×1 conv c_in→R, depthwise k_h×1 and 1×k_w
    convs on the R channels, 1×1 conv R→c_out. ‖W‖²_F = λᵀ(∗_k A_kᵀA_k)λ: O(Σ n_k R²).
    Spectral init: the bounded ALS of :func:`tdecomp._decompositions.cp_als`.
    Rank: an int R, ``(R,)``, or a float parameter ratio.
    """

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        return ("R",)

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        return (None,)

    @classmethod
    def _ranks_at_scale(cls, spec: DenseSpec, scale: float, **options: Any) -> tuple[int, ...]:
        dense_equivalent = spec.weight_numel / sum(spec.weight_shape)
        return (max(1, round(scale * dense_equivalent)),)

    @classmethod
    def _ranks_from_int(cls, spec: DenseSpec, rank: int, **options: Any) -> tuple[int, ...]:
        return (rank,)

    @classmethod
    def count_params(cls, spec: DenseSpec, rank) -> int:
        return rank[0] * sum(spec.weight_shape)

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        (r,) = rank
        shape = self.spec.weight_shape
        factors = [nn.Parameter(torch.empty(n, r, **factory)) for n in shape]
        self.weight = CPTensor(torch.ones(r, **factory), factors, shape=shape, rank=r)

    @property
    def rank(self) -> tuple[int, ...]:
        return (self.weight.rank,)

    def factors(self) -> list[Tensor]:
        return list(self.weight.factors)

    def reconstruct(self) -> Tensor:
        letters = string.ascii_lowercase[: len(self.spec.weight_shape)]
        expr = "z," + ",".join(f"{c}z" for c in letters) + "->" + letters
        return torch.einsum(expr, self.weight.weights, *self.weight.factors)

    def frobenius_sq(self) -> Tensor:
        lam = self.weight.weights
        return lam @ _hadamard_grams(list(self.weight.factors)) @ lam

    def _forward_factorized(self, x: Tensor, pad: tuple[int, int]) -> Tensor:
        a_out, a_in, *spatial = self.weight.factors
        (r,) = self.rank
        z = self._mix(x, a_in.T)
        for axis, f in zip(("h", "w"), spatial):
            kernel = f.T[:, None, :, None] if axis == "h" else f.T[:, None, None, :]
            z = self._conv(z, kernel, axis, pad, groups=r)
        return self._mix(z, a_out * self.weight.weights)

    @torch.no_grad()
    def init_spectral(self, weight: Tensor) -> None:
        self.weight.weights.fill_(1.0)
        for p, f in zip(self.weight.factors, cp_als(weight.to(self.weight.weights.dtype), self.rank[0])):
            p.copy_(f)

    def _random_init_terms(self) -> int:
        return self.rank[0]

    @torch.no_grad()
    def init_random(self, std: float) -> None:
        self.weight.weights.fill_(1.0)
        super().init_random(std)

