"""Rank allocation rules: how one parameter budget is shared among the layers of a model.

A rule turns one dense layer (its family, geometry and trained weight) into ``ranks_at(t)``, the
layer's ranks at a threshold ``t`` common to all layers, non-decreasing in ``t``;
:func:`tdecomp.factorize_model` bisects ``t`` until the factorized layers hold the budget
(:func:`tdecomp._budget.allocate`). Every rule sees, per rank entry r_k of the family, the
*gains* g_j = the share of ‖W‖²_F the j-th unit of r_k captures (:func:`energy_curves`):

- ``uniform``: ``t`` is the family's rank scale (ranks ∝ mode sizes, the paper's rule); the
  weight is not read.
- ``energy``: ``t`` is the fraction of spectral energy every layer keeps: r_k is the smallest
  rank with Σ_{j≤r_k} g_j ≥ t·‖W‖²_F. For low-rank the g_j are the squared singular values σ_j²
  of the matricized weight, so the kept product is the best rank-r_k approximation; for Tucker
  those of the mode-k unfoldings (HOSVD), for TT those of the sequential unfoldings (TT-SVD), whose
  truncation errors bound the decomposition's; for CP the increments of the ALS fit
  1 − ‖W − W_R‖²_F/‖W‖²_F over R.
- ``stable-rank``: r_k = t·‖W‖²_F/g_1, the stable rank ‖W‖²_F/σ₁² of the same unfolding
  (Cuttlefish, Wang et al., MLSys 2023); for CP its tensor analog ‖W‖²_F/‖W_1‖²_F with W_1 the
  best rank-1 fit.

A new rule is one function ``(cls, spec, weight, options) -> ranks_at`` decorated with
:func:`register_allocation`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from ._decompositions import cp_als
from ._registry import Registry
from .layers.base import FactorizedLayer
from .layers.spec import DenseSpec, matricize
from .layers.tt import _tt_shape

RanksAt = Callable[[float], tuple[int, ...]]
AllocationRule = Callable[[type[FactorizedLayer], DenseSpec, Tensor, dict[str, Any]], RanksAt]

ALLOCATIONS: Registry[AllocationRule] = Registry("allocation")
register_allocation = ALLOCATIONS.register
DEFAULT_ALLOCATION = "uniform"
CP_FIT_POINTS = 12  # ranks at which a CP layer's fit curve is known (geometric in R, interpolated between)
CP_FIT_SWEEPS = 10  # ALS sweeps per fit of that curve (SI runs cp_als's own schedule)


def available_allocations() -> tuple[str, ...]:
    """Names of the registered allocation rules, sorted."""
    return ALLOCATIONS.names()


def get_allocation(name: str) -> AllocationRule:
    """The rule registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    return ALLOCATIONS.get(name)


# ------------------------------------------------------------------------------ energy curves
class EnergyCurve:
    """E(r) = Σ_{j≤r} g_j/‖W‖²_F, the fraction of a weight's energy that rank r of one entry keeps,
    for r = 1…``size`` (non-decreasing), from the gains g_j (squared singular values)."""

    def __init__(self, gains: Tensor, total: Tensor) -> None:
        self.kept = (gains.cumsum(0) / total).tolist()
        self.size = len(self.kept)

    def first(self) -> float:
        """E(1) = σ₁²/‖W‖²_F, the inverse stable rank."""
        return self.kept[0]

    def smallest_rank(self, t: float) -> int:
        """min{r : E(r) ≥ t}, or ``size`` if no rank reaches ``t``."""
        return min(bisect_left(self.kept, t) + 1, self.size)


class CPFitCurve(EnergyCurve):
    """E(R) = 1 − ‖W − W_R‖²_F/‖W‖²_F of :func:`cp_als` on ``tensor`` (W as ``spec.tensor_shape``)
    at rank R ≤ R_max (the rank holding as many parameters as W). Fitted lazily at
    :data:`CP_FIT_POINTS` geometric ranks, made non-decreasing and linearly interpolated in between:
    a search for E(R) ≥ t fits only the ranks up to the first grid point that reaches t (ALS cost
    grows as R², so the high ranks a small budget never needs are never fitted)."""

    def __init__(self, spec: DenseSpec, tensor: Tensor) -> None:
        from .layers.cp import CPLayer

        (self.size,) = CPLayer._ranks_at_scale(spec, 1.0)
        self.grid = sorted({round(r) for r in torch.logspace(0, math.log10(self.size), CP_FIT_POINTS).tolist()})
        self.tensor, self.total = tensor, tensor.square().sum()
        self.fits: list[float] = []  # E at grid[: len(fits)], running maximum

    def _fit(self, i: int) -> float:
        while len(self.fits) <= i:
            factors = cp_als(self.tensor, self.grid[len(self.fits)], n_iter=CP_FIT_SWEEPS)
            letters = "abcdefgh"[: self.tensor.ndim]
            approx = torch.einsum(",".join(f"{c}z" for c in letters) + f"->{letters}", *factors)
            fit = float(1 - (self.tensor - approx).square().sum() / self.total)
            self.fits.append(max([fit, *self.fits[-1:]]))
        return self.fits[i]

    def first(self) -> float:
        return self._fit(0)

    def smallest_rank(self, t: float) -> int:
        if t >= 1:
            return self.size
        for i, r in enumerate(self.grid):
            if self._fit(i) >= t:
                if i == 0:
                    return r
                lo, e_lo, e_hi = self.grid[i - 1], self._fit(i - 1), self._fit(i)
                return lo + math.ceil((r - lo) * (t - e_lo) / max(e_hi - e_lo, 1e-300))
        return self.size


def energy_curves(family: str, spec: DenseSpec, weight: Tensor, options: dict[str, Any]) -> list[EnergyCurve | None]:
    """Per rank entry of ``family`` on a layer ``spec`` with ``weight`` (``spec.weight_shape``): the
    :class:`EnergyCurve` of the unfolding the entry truncates (see the module docstring); ``None``
    for an entry the family keeps at full size (Tucker's fixed spatial modes)."""
    tensor = weight.reshape(spec.tensor_shape)  # the modes the families decompose (size-1 axes dropped)
    total = tensor.square().sum()

    def svd_curve(matrix: Tensor) -> EnergyCurve:
        return EnergyCurve(torch.linalg.svdvals(matrix).square(), total)

    if family == "lowrank":
        return [svd_curve(matricize(weight, spec))]
    if family == "tucker":
        fixed = options.get("fixed_spatial", True)
        return [
            None if fixed and k >= 2 else svd_curve(tensor.movedim(k, 0).reshape(n, -1))
            for k, n in enumerate(spec.tensor_shape)
        ]
    if family == "tt":
        chain, shape = tensor.movedim(0, -1), _tt_shape(spec)
        return [svd_curve(chain.reshape(math.prod(shape[: k + 1]), -1)) for k in range(len(shape) - 1)]
    if family == "cp":
        return [CPFitCurve(spec, tensor)]
    raise ValueError(f"rank allocation by the trained weight does not know family {family!r}; "
                     "use allocation='uniform' for it")


def _ranks_from_energy(
    cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any],
    choose: Callable[[EnergyCurve, float], int],
) -> RanksAt:
    """``ranks_at(t)`` with entry k = ``choose(E_k, t)`` clipped to [1, E_k.size] (:func:`energy_curves`);
    entries the family fixes stay at their maximum; the result is clamped to what the family can reach."""
    curves = energy_curves(cls.family, spec, weight, options)
    limits = cls.max_ranks(spec)

    def ranks_at(t: float) -> tuple[int, ...]:
        ranks = [limit if e is None else max(1, min(choose(e, t), e.size)) for e, limit in zip(curves, limits)]
        return cls._clamp(spec, ranks)

    return ranks_at


# ------------------------------------------------------------------------------ the rules
@register_allocation("uniform")
def uniform(cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any]) -> RanksAt:
    """The family's common rank scale: every layer at the same fraction of its mode sizes."""
    return partial(cls._ranks_at_scale, spec, **options)


@register_allocation("energy")
def energy(cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any]) -> RanksAt:
    """r_k = min{r : Σ_{j≤r} g_j ≥ t·‖W‖²_F}: every layer keeps the same fraction t of its energy."""
    return _ranks_from_energy(cls, spec, weight, options, lambda e, t: e.smallest_rank(t))


@register_allocation("stable-rank")
def stable_rank(cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any]) -> RanksAt:
    """r_k = round(t·‖W‖²_F/g_1): ranks proportional to the trained weight's stable ranks."""
    return _ranks_from_energy(cls, spec, weight, options, lambda e, t: round(t / max(e.first(), 1e-300)))


__all__ = ["ALLOCATIONS", "available_allocations", "get_allocation", "energy_curves", "register_allocation"]
