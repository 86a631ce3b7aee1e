"""Model surgery: factorize single layers or whole models to a budget, and collapse them back.

Targets are ``nn.Linear`` (``"linear"``), ``nn.Conv1d``/``Conv2d``/``Conv3d`` (``"conv"``), ``nn.MultiheadAttention``
(``"attention"``, replaced by :class:`~tdecomp.layers.attention.FactorizedMultiheadAttention`) and ``nn.Embedding``
(``"embedding"``, replaced by :class:`~tdecomp.layers.embedding.FactorizedEmbedding`, low-rank only).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from ._budget import allocate
from ._validation import check_choice
from .allocation import DEFAULT_ALLOCATION, get_allocation
from .calibration import data_needs
from .init import DATA_INITS
from .layers.attention import AttentionSpec, FactorizedMultiheadAttention, get_heads
from .layers.base import FactorizedLayer
from .layers.embedding import FactorizedEmbedding
from .layers.ranks import Rank, RankScale
from .layers.registry import get_family
from .layers.separable import SeparableLayer, separable_families
from .layers.spec import CONV_TYPES, DenseSpec
from .layers.walk import named_outermost
from .layers.whitening import LayerStats

log = logging.getLogger("tdecomp")

SkipRule = str | Collection[str] | Callable[[str, nn.Module], bool]
BUDGET_TOLERANCE = 0.02
TARGETS = {"linear": (nn.Linear,), "conv": CONV_TYPES, "attention": (nn.MultiheadAttention,),
           "embedding": (nn.Embedding,)}
DEFAULT_TARGETS = ("linear", "conv")
# what a float ``rank`` is a ratio of: the factorized layers' dense parameters, or the whole model's
# (microsoft/fnl_paper make.py:22-37 bisects the whole model's parameter count)
BUDGETS = ("layers", "model")
Replaceable = FactorizedLayer | FactorizedMultiheadAttention | SeparableLayer


def factorize(
    module: nn.Module, family: str, rank: Rank, init: str = "spectral", separable: bool = False,
    calibration: LayerStats | None = None, **options: Any
) -> Replaceable:
    """Replace-ready factorized version of a dense ``nn.Linear``/``nn.Conv{1,2,3}d``/``nn.MultiheadAttention``.

    Args:
        module: the dense layer (any kernel size, stride, padding incl. ``'same'``, dilation,
            bias; ``groups > 1`` raises ``NotImplementedError``), or an attention module.
        family: one of :func:`tdecomp.available_families` (``lowrank``, ``cp``, ``tucker``, ``tt``);
            for attention ``lowrank`` (per-head QKᵀ/OVᵀ factors) or ``tucker`` (across heads).
        rank: float = target parameter ratio to the dense weight; int or tuple = explicit ranks
            in the family's terms (see the family's class docstring, or
            :class:`~tdecomp.layers.attention.FactorizedMultiheadAttention`).
        init: ``"spectral"`` decomposes ``module.weight`` (for a fresh module, its default init —
            spectral initialization; for a trained one, compression); ``"whitened"`` decomposes it
            whitened by the second moment of its inputs (``calibration``), so the truncation
            minimizes the output error ‖(W − Ŵ)X‖ (:mod:`tdecomp.layers.whitening`; Linear and conv
            layers); ``"random"`` draws balanced factors whose product has the variance of
            ``module.weight``.
        calibration: this layer's :class:`~tdecomp.layers.whitening.LayerStats`
            (``tdecomp.calibrate(model, batches)[name]``), read by ``init="whitened"``.
        **options: ``implementation`` (``"auto"``, the default, / ``"factorized"`` /
            ``"reconstructed"``) and family options
            (e.g. Tucker's ``fixed_spatial``); attention takes none.
        separable: replace a k×k conv by the official Table-2 block instead, a dense depthwise
            k×k conv and a ``family`` (``"tt"``/``"tucker"``) 1×1 conv
            (:class:`~tdecomp.layers.separable.SeparableLayer`); no options.
    """
    if init in DATA_INITS and (separable or isinstance(module, (nn.MultiheadAttention, nn.Embedding))):
        raise ValueError(f"init={init!r} applies to Linear and conv layers; factorize "
                         f"{'separable blocks' if separable else type(module).__name__} with init='spectral'")
    if separable:
        _check_separable(family, options)
        return SeparableLayer.from_dense(module, family, rank, init)
    if isinstance(module, nn.MultiheadAttention):
        _check_attention_options(options)
        return FactorizedMultiheadAttention.from_dense(module, rank, family=family, init=init)
    if isinstance(module, nn.Embedding):
        _check_embedding_family(family)
        return FactorizedEmbedding.from_dense(module, rank, init=init, **options)
    return get_family(family).from_dense(module, rank, init=init, calibration=calibration, **options)


def _check_attention_options(options: dict[str, Any]) -> None:
    """Factorized attention has no options; reject them rather than drop them."""
    if options:
        raise TypeError(f"factorized attention takes no options, got {', '.join(sorted(options))}; "
                        "factorize attention in its own call (targets=('attention',)) without them")


def _check_separable(family: str, options: dict[str, Any]) -> None:
    if family not in separable_families():
        raise ValueError(f"separable=True takes family {' or '.join(map(repr, separable_families()))}, "
                         f"got {family!r}")
    if options:
        raise TypeError(f"the separable block takes no family options, got {', '.join(sorted(options))}")


def _check_embedding_family(family: str) -> None:
    if family != FactorizedEmbedding.family:
        own = FactorizedEmbedding.family
        raise ValueError(f"embeddings factorize as low-rank tables only, not family={family!r}; "
                         f"factorize them in their own call (targets=('embedding',), family={own!r})")


def _default_skip(model: nn.Module) -> set[str]:
    """The paper's convention: the first conv and the final classifier (last Linear) stay dense."""
    convs = [n for n, m in model.named_modules() if isinstance(m, CONV_TYPES)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return set(convs[:1] + linears[-1:])


def eligible_layers(
    model: nn.Module, skip: SkipRule = "default", targets: Collection[str] = DEFAULT_TARGETS
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the layers :func:`factorize_model` would replace.

    ``targets`` picks the module types: ``"linear"`` (``nn.Linear``, e.g. feed-forward blocks),
    ``"conv"`` (``nn.Conv1d``/``Conv2d``/``Conv3d``), ``"attention"`` (``nn.MultiheadAttention`` as a whole),
    ``"embedding"`` (``nn.Embedding``, as a low-rank table).
    Excluded: layers matched by ``skip`` (``"default"``: first conv and last Linear; a collection
    of qualified module names; or a predicate ``(name, module) -> bool``, which then also sees
    attention modules), grouped convs, and Linear layers owned by ``nn.MultiheadAttention`` (it
    reads their weights directly; target ``"attention"`` to factorize it).
    """
    for t in targets:
        check_choice("targets", t, TARGETS)
    kinds = tuple(kind for t in targets for kind in TARGETS[t])
    if isinstance(skip, str):
        if skip != "default":
            raise ValueError(f"skip={skip!r} is not valid; expected 'default', a collection of "
                             "module names, or a callable (name, module) -> bool")
        skip = _default_skip(model)
    if not callable(skip):
        names = {n for n, _ in model.named_modules()}
        unknown = sorted(set(skip) - names)
        if unknown:
            raise ValueError(f"skip names modules that do not exist in the model: {unknown}")
        skip_names = set(skip)
        skip = lambda name, module: name in skip_names  # noqa: E731
    inside_attention = {
        f"{n}.{c}" if n else c
        for n, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention)
        for c, _ in m.named_modules()
    }
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, kinds) or name in inside_attention:
            continue
        if isinstance(module, CONV_TYPES) and module.groups != 1:
            log.info("tdecomp: leaving %s dense (groups=%d)", name, module.groups)
            continue
        if not skip(name, module):
            out.append((name, module))
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def _budget_terms(
    module: nn.Module, family: str, allocation: str, options: dict[str, Any], stats: LayerStats | None = None
) -> tuple[Callable[[float], tuple[int, ...]], Callable[[tuple[int, ...]], int], int]:
    """For one layer: ranks at the ``allocation`` rule's common threshold (the rule may read the layer's
    calibration ``stats``), parameters (incl. biases) at given ranks, dense parameters."""
    if isinstance(module, nn.MultiheadAttention):
        if allocation != DEFAULT_ALLOCATION:
            raise ValueError(f"allocation={allocation!r} does not apply to attention layers; use "
                             f"allocation={DEFAULT_ALLOCATION!r} or targets without 'attention'")
        att = AttentionSpec.from_module(module)
        return (partial(get_heads(family).ranks_at_scale, att),
                partial(FactorizedMultiheadAttention.total_params, att, family), att.num_params)
    if isinstance(module, nn.Embedding):
        _check_embedding_family(family)
        spec = FactorizedEmbedding.table_spec(module.num_embeddings, module.embedding_dim)
    else:
        spec = DenseSpec.from_module(module)
    cls = get_family(family)
    return (get_allocation(allocation)(cls, spec, module.weight.detach(), options, stats),
            lambda r: cls.count_params(spec, r, **options) + spec.num_params - spec.weight_numel, spec.num_params)


def _separable_budget_terms(
    module: nn.Module, family: str
) -> tuple[Callable[[float], tuple[int, ...]], Callable[[tuple[int, ...]], int], int]:
    """:func:`_budget_terms` of the separable block: the official ranks at a rank scale."""
    spec = DenseSpec.from_module(module)
    return (partial(SeparableLayer.ranks_at_scale, spec, family),
            partial(SeparableLayer.total_params, spec, family), spec.num_params)


def factorize_model(
    model: nn.Module,
    family: str,
    rank: Rank,
    init: str = "spectral",
    skip: SkipRule = "default",
    progress: bool = True,
    targets: Collection[str] = DEFAULT_TARGETS,
    allocation: str = DEFAULT_ALLOCATION,
    budget: str = "layers",
    separable: bool = False,
    calibration: Mapping[str, LayerStats] | None = None,
    **options: Any,
) -> nn.Module:
    """Replace every eligible layer of ``model`` in place by a factorized one; returns ``model``.

    With a float ``rank`` (a parameter ratio), one threshold common to all layers is bisected
    so that the factorized layers hold ``rank`` × their dense parameter count (weights and
    biases) within ±2% (single layers then move one rank step to close the gap), as the paper's
    ``make.py`` does. ``allocation`` names the rule that turns the threshold into each layer's
    ranks (:mod:`tdecomp.allocation`): ``"uniform"`` (one rank scale, the paper's), ``"energy"``
    (every layer keeps the same fraction of its weight's spectral energy) or ``"stable-rank"``
    (ranks ∝ the weight's stable rank); the last two read the weights, so they suit compressing a
    trained model. The achieved ratio is logged, a miss
    (e.g. a ratio below what rank 1 needs) warned about, and :func:`summarize` reports it any
    time. An int/tuple ``rank`` is applied to every layer. ``targets`` chooses what to replace
    (see :func:`eligible_layers`): the default keeps attention dense; ``("attention",)``
    factorizes only attention, ``("linear", "attention")`` feed-forward and attention layers.
    To use different families for attention and the rest, call this once per target.
    ``budget="model"`` makes a float ``rank`` the whole model's parameter ratio (the layers left
    dense count at their size, as the official code's bisection does); a :class:`RankScale`
    rank is applied to every layer as is. ``separable=True`` replaces only the convs with a
    kernel > 1, each by the official Table-2 block (see :func:`factorize`); 1×1 convs and Linear
    layers stay dense, as in the official WRN (blocks.py:309-324).

    Data-aware compression: ``calibration`` maps layer names to their input statistics
    (:func:`tdecomp.calibrate` of this ``model`` on a few batches; with ``loss_fn`` also their Fisher
    information), read by ``init="whitened"`` (SI minimizing each layer's output error) and by the
    allocation rules ``"whitened-energy"`` (every layer keeps the same fraction of its output energy)
    and ``"fisher"`` (ranks where the loss is sensitive, Fisher-weighted SVD). See :func:`factorize`
    for the rest.
    """
    check_choice("budget", budget, BUDGETS)
    get_family(family).check_options(options)
    get_allocation(allocation)
    layers = eligible_layers(model, skip, targets)
    if separable:
        _check_separable(family, options)
        if allocation != DEFAULT_ALLOCATION:
            raise ValueError(f"allocation={allocation!r} does not apply to separable blocks; use "
                             f"allocation={DEFAULT_ALLOCATION!r}")
        layers = [(n, m) for n, m in layers if SeparableLayer.applies_to(m)]
    if not layers:
        raise ValueError(f"model has no eligible layer to factorize (targets={tuple(targets)!r}, "
                         f"skip={skip!r})")
    if any(isinstance(m, nn.MultiheadAttention) for _, m in layers):
        get_heads(family)  # fail before any layer is replaced
        _check_attention_options(options)
    stats = _layer_stats(layers, calibration, init, allocation if isinstance(rank, float) else DEFAULT_ALLOCATION)
    ranks: list[Rank]
    model_params = _num_params(model)
    is_ratio = isinstance(rank, float) and not isinstance(rank, RankScale)
    if is_ratio:
        get_family(family).check_ratio(rank)
        terms = [_separable_budget_terms(m, family) if separable else _budget_terms(m, family, allocation, options, st)
                 for (_, m), st in zip(layers, stats)]
        layer_dense = sum(dense for _, _, dense in terms)
        target = rank * layer_dense if budget == "layers" else rank * model_params - (model_params - layer_dense)
        ranks = allocate([ranks_at for ranks_at, _, _ in terms], lambda i, r: terms[i][1](r), target)
    else:
        if allocation != DEFAULT_ALLOCATION:
            raise ValueError(f"allocation={allocation!r} shares a parameter budget: pass rank as a float "
                             f"ratio (e.g. 0.25), not {rank!r}")
        ranks = [rank] * len(layers)
    for (name, module), layer_rank, layer_stats in tqdm(
        list(zip(layers, ranks, stats)), desc=f"factorize ({family})", disable=not progress, leave=False
    ):
        _replace(model, name, factorize(module, family, layer_rank, init=init, separable=separable,
                                        calibration=layer_stats, **options))
    report = summarize(model)
    log.info("tdecomp: %s", report.headline())
    reached = report.ratio if budget == "layers" else _num_params(model) / model_params
    if is_ratio and abs(reached / rank - 1) > BUDGET_TOLERANCE:
        warnings.warn(
            f"factorize_model reached {budget} parameter ratio {reached:.4f}, not {rank} ± 2% "
            "(ranks are clamped to [1, full rank])",
            stacklevel=2,
        )
    return model


def _layer_stats(
    layers: list[tuple[str, nn.Module]], calibration: Mapping[str, LayerStats] | None, init: str, allocation: str
) -> list[LayerStats | None]:
    """Each layer's calibration statistics; ``ValueError`` before any layer is replaced if ``init`` or
    ``allocation`` reads some that ``calibration`` lacks."""
    needs = sorted(data_needs(init, allocation))
    stats = [None if calibration is None else calibration.get(name) for name, _ in layers]
    for (name, _), layer_stats in zip(layers, stats):
        lacking = [need for need in needs if layer_stats is None or getattr(layer_stats, need) is None]
        if lacking:
            call = "tdecomp.calibrate(model, batches" + (", loss_fn=…)" if "fisher" in lacking else ")")
            raise ValueError(f"init={init!r} with allocation={allocation!r} reads calibration data "
                             f"({', '.join(lacking)}) that layer {name!r} lacks; pass calibration={call} "
                             "of the dense model")
    return stats


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def collapse_model(model: nn.Module) -> nn.Module:
    """Replace every factorized layer by its dense equivalent (``to_dense``), in place.

    After overcomplete training ("knowledge distillation without a teacher") this yields the
    compact dense model used for inference and parameter counts. Factorized attention becomes
    ``nn.MultiheadAttention`` (see its ``to_dense`` for when that is possible).
    """
    for name in _outermost_replaceable(model):
        _replace(model, name, model.get_submodule(name).to_dense())
    return model


@dataclass(frozen=True)
class LayerReport:
    name: str
    family: str
    rank: tuple[int, ...]
    params: int
    dense_params: int


@dataclass(frozen=True)
class FactorizationReport:
    """Per-layer and total parameters of the factorized layers against their dense originals."""

    layers: tuple[LayerReport, ...]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def dense_params(self) -> int:
        return sum(layer.dense_params for layer in self.layers)

    @property
    def ratio(self) -> float:
        return self.params / self.dense_params if self.dense_params else math.nan

    def headline(self) -> str:
        return (f"{len(self.layers)} factorized layers hold {self.params:,} parameters, "
                f"{self.ratio:.4f} of their dense {self.dense_params:,}")

    def __str__(self) -> str:
        rows = [f"{'layer':<40} {'family':<8} {'rank':<22} {'params':>10} {'dense':>10} {'ratio':>6}"]
        for r in self.layers:
            rows.append(f"{r.name:<40} {r.family:<8} {str(r.rank):<22} {r.params:>10,} "
                        f"{r.dense_params:>10,} {r.params / r.dense_params:>6.3f}")
        return "\n".join([*rows, self.headline()])


def _outermost_replaceable(model: nn.Module) -> list[str]:
    """Names of the factorized modules not inside another one (a separable block holds a TT/Tucker layer)."""
    return [name for name, _ in named_outermost(model, Replaceable)]


def summarize(model: nn.Module) -> FactorizationReport:
    """A :class:`FactorizationReport` of the factorized layers currently in ``model``."""
    return FactorizationReport(tuple(
        LayerReport(name, m.family, m.rank, m.num_params, m.spec.num_params)
        for name in _outermost_replaceable(model)
        for m in [model.get_submodule(name)]
    ))


__all__ = [
    "FactorizationReport",
    "collapse_model",
    "eligible_layers",
    "factorize",
    "factorize_model",
    "summarize",
]
