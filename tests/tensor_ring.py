"""A fifth family written as a user would: one file, registered by importing it.

It proves the family contract of :class:`tdecomp.FactorizedLayer` is enough on its own: the test
suite imports this module (tests/families.py) and every family-parametrized oracle test then runs
on it too. Only the abstract methods are written here; ``inner``, ``balancedness`` and
``singular_values`` come from the base class's reconstruct-based defaults.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tdecomp._decompositions import tt_svd
from tdecomp.init import balance_norms
from tdecomp.layers import DenseSpec, FactorizedLayer, register_family


def _ring_equation(order: int) -> str:
    """einsum for W[n₁…n_d] = tr(G₁[:, n₁, :] ⋯ G_d[:, n_d, :]), e.g. ``aAb,bBc,cCa->ABC``."""
    bonds, modes = string.ascii_lowercase, string.ascii_uppercase
    cores = [f"{bonds[k]}{modes[k]}{bonds[(k + 1) % order]}" for k in range(order)]
    return ",".join(cores) + "->" + modes[:order]


@register_family("tensor_ring")
class TensorRingLayer(FactorizedLayer):
    """W[o, i, h, w] = tr(G₁[:, o, :] G₂[:, i, :] G₃[:, h, :] G₄[:, w, :]), cores (r, n_k, r) over the
    modes of ``spec.tensor_shape`` (kernel axes of size 1 get no core, as in every family).

    Rank: one ring rank r for every bond (a float ratio moves in steps of Σ n_k·(2r+1)).
    Forward: the dense op on :meth:`reconstruct` (a test family needs no cost model). Spectral
    init: TT-SVD embedded in the ring (closing bond index 0), exact up to TT truncation, then
    balanced core norms.
    """

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        return ("ring",)

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        return (None,)  # no rank beyond which a ring stops gaining expressiveness

    @classmethod
    def _ranks_at_scale(cls, spec: DenseSpec, scale: float, **options: Any) -> tuple[int, ...]:
        return (max(1, round(scale * max(spec.tensor_shape))),)

    @classmethod
    def _ranks_from_int(cls, spec: DenseSpec, rank: int, **options: Any) -> tuple[int, ...]:
        return (rank,)

    @classmethod
    def count_params(cls, spec: DenseSpec, rank: Sequence[int]) -> int:
        return rank[0] ** 2 * sum(spec.tensor_shape)

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        (r,) = rank
        self.cores = nn.ParameterList(nn.Parameter(torch.empty(r, n, r, **factory)) for n in self.spec.tensor_shape)

    @property
    def rank(self) -> tuple[int, ...]:
        return (self.cores[0].shape[0],)

    def factors(self) -> list[Tensor]:
        return list(self.cores)

    def reconstruct(self) -> Tensor:
        return torch.einsum(_ring_equation(len(self.cores)), *self.cores).reshape(self.spec.weight_shape)

    def frobenius_sq(self) -> Tensor:
        """tr(Π_k Σ_n G_k[:, n, :] ⊗ G_k[:, n, :]) with (r², r²) transfer matrices."""
        transfer = None
        for core in self.cores:
            a, _, b = core.shape
            step = torch.einsum("anb,cnd->acbd", core, core).reshape(a * a, b * b)
            transfer = step if transfer is None else transfer @ step
        return transfer.trace()

    def _forward_factorized(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        if not self.spec.is_conv:
            return self._mix(x, self.reconstruct())
        kernel = self.reconstruct().reshape(self.spec.tensor_shape)
        return self._conv(x, kernel, range(len(self.spec.factor_kernel)), pad)

    @torch.no_grad()
    def init_spectral(self, weight: Tensor) -> None:
        tensor = weight.to(self.cores[0].dtype).reshape(self.spec.tensor_shape)
        tt = tt_svd(tensor, self.rank * (len(self.cores) - 1))
        for core, t in zip(self.cores, tt):
            core.zero_()
            core[: t.shape[0], :, : t.shape[2]] = t
        balance_norms(self.factors())

    def _random_init_terms(self) -> int:
        return self.rank[0] ** len(self.cores)
