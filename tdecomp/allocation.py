"""Rank allocation rules: how one parameter budget is shared among the layers of a model.

A rule turns one dense layer (its family, geometry and trained weight) into ``ranks_at(t)``, the
layer's ranks at a threshold ``t`` common to all layers, non-decreasing in ``t``;
:func:`tdecomp.factorize_model` bisects ``t`` until the factorized layers hold the budget
(:func:`tdecomp._budget.allocate`). Every rule sees, per rank entry r_k of the family, the
*gains* g_j = the share of ‖W‖²_F the j-th unit of r_k captures (the family's
:meth:`~tdecomp.layers.base.FactorizedLayer.energy_curves`, :class:`~tdecomp.layers.energy.EnergyCurve`):

- ``uniform``: ``t`` is the family's rank scale (ranks ∝ mode sizes, the paper's rule); the
  weight is not read.
- ``energy``: ``t`` is the fraction of spectral energy every layer keeps: r_k is the smallest
  rank with Σ_{j≤r_k} g_j ≥ t·‖W‖²_F. Each family says what its g_j are: for low-rank the
  squared singular values σ_j² of the matricized weight, so the kept product is the best rank-r_k
  approximation; for Tucker those of the mode-k unfoldings (HOSVD), for TT those of the sequential
  unfoldings (TT-SVD), whose truncation errors bound the decomposition's; for CP the increments of
  the ALS fit 1 − ‖W − W_R‖²_F/‖W‖²_F over R.
- ``stable-rank``: r_k = t·‖W‖²_F/g_1, the stable rank ‖W‖²_F/σ₁² of the same unfolding
  (Cuttlefish, Wang et al., MLSys 2023); for CP its tensor analog ‖W‖²_F/‖W_1‖²_F with W_1 the
  best rank-1 fit.

A new rule is one function ``(cls, spec, weight, options) -> ranks_at`` decorated with
:func:`register_allocation`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor

from ._registry import Registry
from .layers.base import FactorizedLayer
from .layers.energy import EnergyCurve
from .layers.spec import DenseSpec

RanksAt = Callable[[float], tuple[int, ...]]
AllocationRule = Callable[[type[FactorizedLayer], DenseSpec, Tensor, dict[str, Any]], RanksAt]

ALLOCATIONS: Registry[AllocationRule] = Registry("allocation")
register_allocation = ALLOCATIONS.register
DEFAULT_ALLOCATION = "uniform"


def available_allocations() -> tuple[str, ...]:
    """Names of the registered allocation rules, sorted."""
    return ALLOCATIONS.names()


def get_allocation(name: str) -> AllocationRule:
    """The rule registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    return ALLOCATIONS.get(name)


def _ranks_from_energy(
    cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any],
    choose: Callable[[EnergyCurve, float], int],
) -> RanksAt:
    """``ranks_at(t)`` with entry k = ``choose(E_k, t)`` clipped to [1, E_k.size] (the family's
    ``energy_curves``); entries the family fixes stay at their maximum; the result is clamped to what
    the family can reach."""
    curves = cls.energy_curves(spec, weight, **options)
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


__all__ = ["ALLOCATIONS", "available_allocations", "get_allocation", "register_allocation"]
