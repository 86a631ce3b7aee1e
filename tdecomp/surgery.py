"""Model surgery: factorize single layers or whole models to a budget (or to a stored plan), and collapse them back.

Targets are ``nn.Linear`` and transformers' ``Conv1D`` (``"linear"``), ``nn.Conv1d``/``Conv2d``/``Conv3d``
(``"conv"``), ``nn.MultiheadAttention`` (``"attention"``, replaced by
:class:`~tdecomp.layers.attention.FactorizedMultiheadAttention`) and ``nn.Embedding`` (``"embedding"``, replaced
by :class:`~tdecomp.layers.embedding.FactorizedEmbedding`, low-rank only). Which modules are replaced and why
the others stay dense: :mod:`tdecomp.eligibility`; the report: :mod:`tdecomp.surgery_report`; plans:
:mod:`tdecomp.plan`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from ._budget import allocate
from ._validation import check_choice
from .allocation import DEFAULT_ALLOCATION, get_allocation
from .calibration import data_needs
from .eligibility import DEFAULT_TARGETS, SKIP, TARGETS, KeptLayer, SkipRule, eligible_layers, survey
from .init import DATA_INITS
from .layers.attention import AttentionSpec, FactorizedMultiheadAttention, get_heads
from .layers.embedding import FactorizedEmbedding
from .layers.ranks import Rank, RankScale, as_rank
from .layers.registry import get_family
from .layers.separable import SeparableLayer, separable_families
from .layers.spec import DenseSpec
from .layers.whitening import LayerStats
from .output_layer import ExampleInput
from .plan import Plan, as_plan, dense_kind
from .surgery_report import (
    SHOWN,
    FactorizationReport,
    LayerReport,
    Replaceable,
    log_warnings,
    num_params,
    outermost_replaceable,
    record_surgery,
    summarize,
)

log = logging.getLogger("tdecomp")

BUDGET_TOLERANCE = 0.02
# what a float ``rank`` is a ratio of: the factorized layers' dense parameters, or the whole model's
# (microsoft/fnl_paper make.py:22-37 bisects the whole model's parameter count)
BUDGETS = ("layers", "model")


def factorize(
    module: nn.Module, family: str, rank: Rank, init: str = "spectral", separable: bool = False,
    calibration: LayerStats | None = None, **options: Any
) -> Replaceable:
    """Replace-ready factorized version of a dense ``nn.Linear``/``nn.Conv{1,2,3}d``/``nn.MultiheadAttention``
    (or transformers' ``Conv1D``, as the Linear it is, collapsing back to a ``Conv1D``).

    Args:
        module: the dense layer (any kernel size, stride, padding incl. ``'same'``, dilation,
            bias; ``groups > 1`` raises ``NotImplementedError``), or an attention module. Its parameters'
            ``requires_grad`` carries over: the factors follow the weight, the bias the bias.
        family: one of :func:`tdecomp.available_families` (``lowrank``, ``cp``, ``tucker``, ``tt``);
            for attention ``lowrank`` (per-head QKᵀ/OVᵀ factors) or ``tucker`` (across heads).
        rank: float = target parameter ratio to the dense weight; int or tuple = explicit ranks
            in the family's terms (see the family's class docstring, or
            :class:`~tdecomp.layers.attention.FactorizedMultiheadAttention`); numpy scalars and 0-d
            tensors count as the numbers they hold.
        init: ``"spectral"`` decomposes ``module.weight`` (for a fresh module, its default init —
            spectral initialization; for a trained one, compression; a zero or rank-deficient weight
            gets its missing directions padded, :mod:`tdecomp.layers.spectral`); ``"whitened"``
            decomposes it whitened by the second moment of its inputs (``calibration``), so the
            truncation minimizes the output error ‖(W − Ŵ)X‖ (:mod:`tdecomp.layers.whitening`; Linear
            and conv layers); ``"random"`` draws balanced factors whose product has the variance of
            ``module.weight`` (on the meta device too).
        calibration: this layer's :class:`~tdecomp.layers.whitening.LayerStats`
            (``tdecomp.calibrate(model, batches)[name]``), read by ``init="whitened"``.
        **options: ``implementation`` (``"auto"``, the default, / ``"factorized"`` /
            ``"reconstructed"``) and family options
            (e.g. Tucker's ``fixed_spatial``); attention takes none.
        separable: replace a k×k conv by the official Table-2 block instead, a dense depthwise
            k×k conv and a ``family`` (``"tt"``/``"tucker"``) 1×1 conv
            (:class:`~tdecomp.layers.separable.SeparableLayer`); no options.
    """
    rank = as_rank(rank)
    if init in DATA_INITS and (separable or isinstance(module, (nn.MultiheadAttention, nn.Embedding))):
        raise ValueError(f"init={init!r} applies to Linear and conv layers; factorize "
                         f"{'separable blocks' if separable else type(module).__name__} with init='spectral'")
    if separable:
        _check_separable(family, options)
        layer: Replaceable = SeparableLayer.from_dense(module, family, rank, init)
    elif isinstance(module, nn.MultiheadAttention):
        _check_attention_options(options)
        layer = FactorizedMultiheadAttention.from_dense(module, rank, family=family, init=init)
    elif isinstance(module, nn.Embedding):
        _check_embedding_family(family)
        layer = FactorizedEmbedding.from_dense(module, rank, init=init, **options)
    else:
        layer = get_family(family).from_dense(module, rank, init=init, calibration=calibration, **options)
    _inherit_requires_grad(module, layer)
    return layer


def _inherit_requires_grad(dense: nn.Module, layer: nn.Module) -> None:
    """Freeze what was frozen: the replacement's biases follow the dense biases, everything else its weights."""
    def trainable(biases: bool) -> bool:
        return any(p.requires_grad for name, p in dense.named_parameters() if name.endswith("bias") == biases)

    weights, biases = trainable(False), trainable(True)
    for name, p in layer.named_parameters():
        p.requires_grad_(biases if name.endswith("bias") else weights)


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
        weight = module.weight
    else:
        spec = DenseSpec.from_module(module)
        weight = spec.dense_weight(module)
    cls = get_family(family)
    return (get_allocation(allocation)(cls, spec, weight.detach(), options, stats),
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
    family: str | None = None,
    rank: Rank | None = None,
    init: str = "spectral",
    skip: SkipRule = "default",
    progress: bool = True,
    targets: Collection[str] = DEFAULT_TARGETS,
    allocation: str = DEFAULT_ALLOCATION,
    budget: str = "layers",
    separable: bool = False,
    calibration: Mapping[str, LayerStats] | None = None,
    plan: Plan | Mapping[str, Any] | None = None,
    example_input: ExampleInput | None = None,
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
    trained model. A miss (e.g. a ratio below what rank 1 needs) is warned about. An int/tuple
    ``rank`` is applied to every layer. ``targets`` chooses what to replace
    (see :func:`eligible_layers`): the default keeps attention dense; ``("attention",)``
    factorizes only attention, ``("linear", "attention")`` feed-forward and attention layers.
    To use different families for attention and the rest, call this once per target.
    ``budget="model"`` makes a float ``rank`` the whole model's parameter ratio (the layers left
    dense count at their size, as the official code's bisection does); a :class:`RankScale`
    rank is applied to every layer as is. ``separable=True`` replaces only the convs with a
    kernel > 1, each by the official Table-2 block (see :func:`factorize`); 1×1 convs and Linear
    layers stay dense, as in the official WRN (blocks.py:309-324). ``example_input`` feeds the
    default skip rule's search for the output layer (:mod:`tdecomp.output_layer`).

    Data-aware compression: ``calibration`` maps layer names to their input statistics
    (:func:`tdecomp.calibrate` of this ``model`` on a few batches; with ``loss_fn`` also their Fisher
    information), read by ``init="whitened"`` (SI minimizing each layer's output error) and by the
    allocation rules ``"whitened-energy"`` (every layer keeps the same fraction of its output energy)
    and ``"fisher"`` (ranks where the loss is sensitive, Fisher-weighted SVD).

    ``plan`` (instead of ``family`` and ``rank``; :mod:`tdecomp.plan`, e.g. another model's
    :func:`~tdecomp.plan.plan_of` or a checkpoint's) replaces exactly the modules it names with exactly
    its families, ranks and options, ``init`` as given (:func:`tdecomp.load` uses ``"random"``).

    The surgery report (:func:`summarize`: factorized layers, the targeted layers kept dense and why,
    the model's parameters counted once each) is logged at INFO, anything a user might not expect
    (tied or parametrized weights, grouped convs, SI padding of zero weights) at WARNING.
    See :func:`factorize` for the rest.
    """
    dense_model_params = num_params(model)
    if plan is not None:
        if family is not None or rank is not None:
            raise TypeError("factorize_model takes either plan= or family and rank, not both")
        kept = []
        _apply_plan(model, as_plan(plan), init, progress)
    else:
        if family is None or rank is None:
            raise TypeError("factorize_model needs family and rank (or a plan=)")
        kept = _factorize_eligible(model, family, as_rank(rank), init, skip, progress, targets, allocation,
                                   budget, separable, example_input, calibration, options)
    record_surgery(model, dense_model_params, kept)
    report = summarize(model)
    log.info("tdecomp: surgery report\n%s", report)
    log_warnings(report)
    return model


def _factorize_eligible(
    model: nn.Module, family: str, rank: Rank, init: str, skip: SkipRule, progress: bool,
    targets: Collection[str], allocation: str, budget: str, separable: bool, example_input: ExampleInput | None,
    calibration: Mapping[str, LayerStats] | None, options: dict[str, Any],
) -> list[KeptLayer]:
    """:func:`factorize_model` by family and rank; returns the layers it kept dense."""
    check_choice("budget", budget, BUDGETS)
    get_family(family).check_options(options)
    get_allocation(allocation)
    layers, kept = survey(model, skip, targets, example_input)
    if separable:
        _check_separable(family, options)
        if allocation != DEFAULT_ALLOCATION:
            raise ValueError(f"allocation={allocation!r} does not apply to separable blocks; use "
                             f"allocation={DEFAULT_ALLOCATION!r}")
        kept += [KeptLayer(n, type(m).__name__, SKIP, "the separable block replaces convs with a kernel > 1 only")
                 for n, m in layers if not SeparableLayer.applies_to(m)]
        layers = [(n, m) for n, m in layers if SeparableLayer.applies_to(m)]
    if not layers:
        why = "".join(f"; {k.name} kept dense ({k.reason})" for k in kept[:SHOWN])
        raise ValueError(f"model has no eligible layer to factorize (targets={tuple(targets)!r}, skip={skip!r}{why})")
    if any(isinstance(m, nn.MultiheadAttention) for _, m in layers):
        get_heads(family)  # fail before any layer is replaced
        _check_attention_options(options)
    stats = _layer_stats(layers, calibration, init, allocation if isinstance(rank, float) else DEFAULT_ALLOCATION)
    ranks: list[Rank]
    model_params = num_params(model)
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
    new = [model.get_submodule(name) for name, _ in layers]
    layer_ratio = sum(m.num_params for m in new) / sum(m.spec.num_params for m in new)
    reached = layer_ratio if budget == "layers" else num_params(model) / model_params
    if is_ratio and abs(reached / rank - 1) > BUDGET_TOLERANCE:
        warnings.warn(
            f"factorize_model reached {budget} parameter ratio {reached:.4f}, not {rank} ± 2% "
            "(ranks are clamped to [1, full rank])",
            stacklevel=3,
        )
    return kept


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


def _apply_plan(model: nn.Module, plan: Plan, init: str, progress: bool) -> None:
    """Replace each module ``plan`` names as its :class:`~tdecomp.plan.LayerPlan` says."""
    modules = dict(model.named_modules())
    missing = sorted(set(plan) - set(modules))
    if missing:
        raise ValueError(f"the plan names modules this model does not have: {missing[:SHOWN]}; build the "
                         "model the plan was made for")
    for name, entry in tqdm(plan.items(), desc="factorize (plan)", disable=not progress, leave=False):
        kind = dense_kind(modules[name])
        if kind != entry.kind:
            raise ValueError(f"the plan replaces {name} as a {entry.kind} layer, but the model holds a {kind} "
                             f"({type(modules[name]).__name__}) there; build the model the plan was made for")
        layer = factorize(modules[name], entry.family, entry.rank, init=init, separable=entry.separable,
                          **entry.options)
        _replace(model, name, layer)


def collapse_model(model: nn.Module) -> nn.Module:
    """Replace every factorized layer by its dense equivalent (``to_dense``), in place.

    After overcomplete training ("knowledge distillation without a teacher") this yields the
    compact dense model used for inference and parameter counts. Factorized attention becomes
    ``nn.MultiheadAttention`` (see its ``to_dense`` for when that is possible); a layer that replaced
    transformers' ``Conv1D`` becomes a ``Conv1D``.
    """
    for name in outermost_replaceable(model):
        _replace(model, name, model.get_submodule(name).to_dense())
    return model


__all__ = [
    "DEFAULT_TARGETS",
    "TARGETS",
    "FactorizationReport",
    "LayerReport",
    "collapse_model",
    "eligible_layers",
    "factorize",
    "factorize_model",
    "summarize",
]
