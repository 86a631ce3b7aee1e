"""A factorized model's *plan*: what replaced which module, so that the model can be rebuilt.

A ``state_dict`` alone cannot be loaded into a freshly built model: its factor shapes follow ranks that
``allocation="energy"`` derived from the trained weights, options, the separable block… The plan maps
each replaced module's qualified name to a :class:`LayerPlan` (family, ranks, family options, what the
dense module was, whether it became the separable block); :func:`tdecomp.factorize_model` takes
``plan=`` and replaces exactly those modules with exactly those ranks. Checkpoints store it in plain
containers (:func:`plan_to_dict`) next to the weights (:mod:`tdecomp.saving`, the trainer's ``last.pt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .layers.attention import FactorizedMultiheadAttention
from .layers.base import FactorizedLayer
from .layers.embedding import FactorizedEmbedding
from .layers.separable import SeparableLayer
from .layers.spec import DenseSpec
from .surgery_report import outermost_replaceable

ATTENTION, EMBEDDING = "attention", "embedding"  # plan kinds of the modules without a DenseSpec kind


@dataclass(frozen=True)
class LayerPlan:
    """How one module was replaced: ``factorize(module, family, rank, separable=separable, **options)``
    on a dense module of ``kind`` (:attr:`DenseSpec.kind`, ``"attention"`` or ``"embedding"``)."""

    family: str
    rank: tuple[int, ...]
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    separable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "rank": list(self.rank), "kind": self.kind, "options": dict(self.options),
                "separable": self.separable}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> LayerPlan:
        return cls(value["family"], tuple(value["rank"]), value["kind"], dict(value.get("options", {})),
                   bool(value.get("separable", False)))


Plan = dict[str, LayerPlan]


def plan_of(model: nn.Module) -> Plan:
    """The plan of every factorized module in ``model`` (outermost ones, by qualified name)."""
    return {name: _layer_plan(model.get_submodule(name)) for name in outermost_replaceable(model)}


def _layer_plan(module: nn.Module) -> LayerPlan:
    if isinstance(module, FactorizedEmbedding):
        return LayerPlan(module.family, module.rank, EMBEDDING, dict(module.family_options))
    if isinstance(module, FactorizedLayer):
        return LayerPlan(module.family, module.rank, module.spec.kind, dict(module.family_options))
    if isinstance(module, SeparableLayer):
        return LayerPlan(module.family, module.rank, module.spec.kind, separable=True)
    if isinstance(module, FactorizedMultiheadAttention):
        return LayerPlan(module.family, module.rank, ATTENTION)
    raise TypeError(f"no plan for a {type(module).__name__}")


def dense_kind(module: nn.Module) -> str:
    """The plan kind of a dense ``module`` (checked before a plan replaces it)."""
    if isinstance(module, nn.MultiheadAttention):
        return ATTENTION
    if isinstance(module, nn.Embedding):
        return EMBEDDING
    return DenseSpec.from_module(module).kind


def as_plan(plan: Plan | Mapping[str, Any]) -> Plan:
    """A :data:`Plan` from itself or its serialized form (:func:`plan_to_dict`)."""
    layers = plan.get("layers", plan) if isinstance(plan, Mapping) else plan
    return {name: p if isinstance(p, LayerPlan) else LayerPlan.from_dict(p) for name, p in layers.items()}


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The serialized plan: ``{"layers": {name: LayerPlan.to_dict()}}``, plain containers only."""
    return {"layers": {name: p.to_dict() for name, p in plan.items()}}
