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

Two rules read calibration data (:func:`tdecomp.calibrate`) and share the budget by output error:

- ``whitened-energy``: the ``energy`` rule on the whitened weight W' = W ×_S Lᵀ that whitened SI
  decomposes (:mod:`tdecomp.layers.whitening`), whose energy ‖W'‖²_F is the mean squared output
  ‖WX‖²/N: every layer keeps the same fraction t of its output energy, i.e. the same estimated
  relative output error √(1 − t).
- ``fisher``: Fisher-weighted SVD (Hsu et al., ICLR 2022) in absolute units. Output row o of W is
  weighted by √I_o, I_o = Σ of the Fisher information (squared loss gradients,
  :func:`tdecomp.fisher_information`) over that row's weights, so ‖W_F − Ŵ_F‖²_F estimates the loss
  increase of the truncation; the family's gains on W_F, unnormalized, decide: r_k is the smallest
  rank whose discarded Fisher energy (1 − E_k(r))·‖W_F‖²_F is at most ε(t) = exp(1/t − 1/(1 − t)),
  one threshold for all layers (ε falls from ∞ at t = 0 to 0 at t = 1, over every scale). A layer
  whose Fisher information is 0 discards nothing at rank 1, so it gets the minimum ranks.

A new rule is one function ``(cls, spec, weight, options, stats) -> ranks_at`` decorated with
:func:`register_allocation`; ``stats`` is the layer's :class:`~tdecomp.layers.whitening.LayerStats`
(None without calibration), and a rule that reads it declares the fields with ``needs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor

from ._registry import Registry
from .layers.base import FactorizedLayer
from .layers.energy import EnergyCurve
from .layers.spec import DenseSpec
from .layers.whitening import LayerStats, whiten

RanksAt = Callable[[float], tuple[int, ...]]
AllocationRule = Callable[[type[FactorizedLayer], DenseSpec, Tensor, dict[str, Any], LayerStats | None], RanksAt]

ALLOCATIONS: Registry[AllocationRule] = Registry("allocation")
DEFAULT_ALLOCATION = "uniform"


def register_allocation(name: str, needs: tuple[str, ...] = ()) -> Callable[[AllocationRule], AllocationRule]:
    """Decorator registering a rule as ``name``; ``needs``: the :class:`LayerStats` fields it reads
    (``"gram"``: calibrated inputs, ``"fisher"``: Fisher information), kept as ``rule.needs``."""

    def decorator(rule: AllocationRule) -> AllocationRule:
        rule.needs = needs
        return ALLOCATIONS.register(name)(rule)

    return decorator


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
def uniform(cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any],
            stats: LayerStats | None = None) -> RanksAt:
    """The family's common rank scale: every layer at the same fraction of its mode sizes."""
    return partial(cls._ranks_at_scale, spec, **options)


@register_allocation("energy")
def energy(cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any],
           stats: LayerStats | None = None) -> RanksAt:
    """r_k = min{r : Σ_{j≤r} g_j ≥ t·‖W‖²_F}: every layer keeps the same fraction t of its energy."""
    return _ranks_from_energy(cls, spec, weight, options, lambda e, t: e.smallest_rank(t))


@register_allocation("stable-rank")
def stable_rank(cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any],
                stats: LayerStats | None = None) -> RanksAt:
    """r_k = round(t·‖W‖²_F/g_1): ranks proportional to the trained weight's stable ranks."""
    return _ranks_from_energy(cls, spec, weight, options, lambda e, t: round(t / max(e.first(), 1e-300)))


@register_allocation("whitened-energy", needs=("gram",))
def whitened_energy(cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any],
                    stats: LayerStats | None = None) -> RanksAt:
    """The ``energy`` rule on W ×_S Lᵀ, the weight whitened on the family's input space as whitened SI
    does: every layer keeps the same fraction of its output energy."""
    axes = cls.input_axes(spec)
    return energy(cls, spec, whiten(weight, axes, stats.whitening(axes)), options)


@register_allocation("fisher", needs=("fisher",))
def fisher(cls: type[FactorizedLayer], spec: DenseSpec, weight: Tensor, options: dict[str, Any],
           stats: LayerStats | None = None) -> RanksAt:
    """r_k = min{r : (1 − E_k(r))·‖W_F‖²_F ≤ ε(t)} on the Fisher-weighted W_F (rows scaled by √I_o), a
    threshold in absolute units common to all layers; minimum ranks where I = 0 (module docstring)."""
    rows = stats.fisher.reshape(spec.out_channels, -1).sum(1).sqrt()
    weighted = weight.to(rows) * rows.reshape(-1, *(1,) * (weight.ndim - 1))
    total = float(weighted.square().sum())
    if total == 0:  # nothing to lose: the smallest ranks at every t
        return _ranks_from_energy(cls, spec, weight, options, lambda e, t: 1)
    return _ranks_from_energy(cls, spec, weighted, options, lambda e, t: e.smallest_rank(1 - loss_threshold(t) / total))


def loss_threshold(t: float) -> float:
    """ε(t) = exp(1/t − 1/(1 − t)): ∞ at t ≤ 0, 1 at t = ½, 0 at t ≥ 1, decreasing (the ``fisher`` rule's
    common threshold, on a log scale so that t resolves every magnitude of Fisher energy)."""
    if t <= 0:
        return math.inf
    if t >= 1:
        return 0.0
    return math.exp(min(1 / t - 1 / (1 - t), 700.0))


__all__ = ["ALLOCATIONS", "available_allocations", "get_allocation", "register_allocation"]
