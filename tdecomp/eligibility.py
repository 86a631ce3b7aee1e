"""Which modules of a model surgery replaces, and why each other one of the targeted types stays dense.

:func:`survey` walks the model once and sorts every module of the ``targets`` types into the layers
to factorize and :class:`KeptLayer` records; the first reason that applies is given
(:data:`KEPT_REASONS`, in that order):

- ``peft``: inside a PEFT tuner layer or wrapper (LoRA's ``base_layer``, ``lora_A``, ``lora_B``,
  ``lora_embedding_*``, other adapters, ``modules_to_save``): PEFT owns them, its forward reads them;
- ``inside attention``: the projections of an ``nn.MultiheadAttention`` (it reads their weights
  directly; target ``"attention"`` factorizes it as a whole);
- ``unsupported type``: a transposed conv;
- ``grouped conv``: ``groups > 1`` (factorized convolutions need groups = 1);
- ``skip rule``: matched by ``skip`` (names or a predicate), or the default rule: the first conv and
  the model's output layer (:mod:`tdecomp.output_layer`, named in the detail);
- ``parametrization``: its weight is computed by a parametrization (``weight_norm``, ``spectral_norm``,
  ``torch.nn.utils.parametrize``): a factorized layer would drop it;
- ``tied``: a parameter of it is also registered elsewhere (GPT-2's ``lm_head.weight`` is
  ``transformer.wte.weight``): replacing it would untie the two and add parameters. Factorizing once
  while keeping the tie is not offered: the other holder (an embedding) would need the same factors.

Reasons a user might not expect (:data:`WARNED`) are logged at WARNING by :func:`tdecomp.factorize_model`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrize

from ._validation import check_choice
from .layers.spec import CONV_TYPES, is_transposed_linear
from .output_layer import ExampleInput, find_output_layer

log = logging.getLogger("tdecomp")

SkipRule = str | Collection[str] | Callable[[str, nn.Module], bool]
TARGETS = {"linear": (nn.Linear,), "conv": CONV_TYPES, "attention": (nn.MultiheadAttention,),
           "embedding": (nn.Embedding,)}
DEFAULT_TARGETS = ("linear", "conv")
UNSUPPORTED_TYPES = {"conv": (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)}
PEFT, INSIDE_ATTENTION, UNSUPPORTED, GROUPED, SKIP, PARAMETRIZED, TIED = (
    "peft", "inside attention", "unsupported type", "grouped conv", "skip rule", "parametrization", "tied")
KEPT_REASONS = (PEFT, INSIDE_ATTENTION, UNSUPPORTED, GROUPED, SKIP, PARAMETRIZED, TIED)
WARNED = (UNSUPPORTED, PARAMETRIZED, GROUPED, TIED)
# the classes a PEFT tuner layer or wrapper derives from (peft.tuners.tuners_utils, peft.utils.other)
PEFT_BASES = ("BaseTunerLayer", "AuxiliaryTrainingWrapper")
NORM_HOOKS = ("WeightNorm", "SpectralNorm")  # the pre-hooks of torch.nn.utils.weight_norm/spectral_norm


@dataclass(frozen=True)
class KeptLayer:
    """A module of a targeted type left dense: its qualified ``name``, class name, ``reason``
    (:data:`KEPT_REASONS`) and a ``detail`` (e.g. what it is tied to)."""

    name: str
    type: str
    reason: str
    detail: str = ""


def eligible_layers(
    model: nn.Module, skip: SkipRule = "default", targets: Collection[str] = DEFAULT_TARGETS,
    example_input: ExampleInput | None = None,
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the layers :func:`tdecomp.factorize_model` would replace.

    ``targets`` picks the module types: ``"linear"`` (``nn.Linear`` and transformers' ``Conv1D``,
    e.g. feed-forward blocks), ``"conv"`` (``nn.Conv1d``/``Conv2d``/``Conv3d``), ``"attention"``
    (``nn.MultiheadAttention`` as a whole), ``"embedding"`` (``nn.Embedding``, as a low-rank table).
    ``skip``: ``"default"`` (the first conv and the model's output layer, found as
    :mod:`tdecomp.output_layer` says, from ``example_input`` when given), a collection of qualified
    module names, or a predicate ``(name, module) -> bool`` (which then also sees attention modules).
    Everything else left out, and why, is :func:`survey`'s.
    """
    return survey(model, skip, targets, example_input)[0]


def survey(
    model: nn.Module, skip: SkipRule = "default", targets: Collection[str] = DEFAULT_TARGETS,
    example_input: ExampleInput | None = None,
) -> tuple[list[tuple[str, nn.Module]], list[KeptLayer]]:
    """The layers to factorize and the :class:`KeptLayer` records of the others (module docstring)."""
    for t in targets:
        check_choice("targets", t, TARGETS)
    found = [(name, m) for name, m in model.named_modules() if _targeted(m, targets)]
    rule = _skip_rule(model, skip, found, example_input)
    peft = [n for n, m in model.named_modules() if _is_peft(m)]
    attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    holders = _holders(model)
    layers, kept = [], []
    for name, module in found:
        reason = (
            (PEFT, "") if _inside(name, peft)
            else (INSIDE_ATTENTION, "factorize it whole with targets=('attention',)") if _inside(name, attention)
            else (UNSUPPORTED, "") if _unsupported(module)
            else (GROUPED, f"groups={module.groups}") if getattr(module, "groups", 1) != 1
            else rule(name, module)
            or ((PARAMETRIZED, "its weight is computed by a parametrization") if _parametrized(module)
                else _tied(name, module, holders))
        )
        if reason is None:
            layers.append((name, module))
        else:
            kept.append(KeptLayer(name, type(module).__name__, *reason))
    return layers, kept


def _targeted(module: nn.Module, targets: Collection[str]) -> bool:
    if any(isinstance(module, TARGETS[t] + UNSUPPORTED_TYPES.get(t, ())) for t in targets):
        return True
    return "linear" in targets and is_transposed_linear(module)


def _skip_rule(
    model: nn.Module, skip: SkipRule, found: list[tuple[str, nn.Module]], example_input: ExampleInput | None
) -> Callable[[str, nn.Module], tuple[str, str] | None]:
    """``(name, module) -> (SKIP, detail)`` for the layers ``skip`` keeps dense, else ``None``."""
    if isinstance(skip, str):
        if skip != "default":
            raise ValueError(f"skip={skip!r} is not valid; expected 'default', a collection of "
                             "module names, or a callable (name, module) -> bool")
        convs = [n for n, m in model.named_modules() if isinstance(m, CONV_TYPES)]
        output, how = find_output_layer(model, [n for n, _ in found], example_input)
        named = {**({output: f"default rule: the output layer ({how})"} if output is not None else {}),
                 **{n: "default rule: the first conv" for n in convs[:1]}}
        return lambda name, module: (SKIP, named[name]) if name in named else None
    if callable(skip):
        return lambda name, module: (SKIP, "skip predicate") if skip(name, module) else None
    unknown = sorted(set(skip) - {n for n, _ in model.named_modules()})
    if unknown:
        raise ValueError(f"skip names modules that do not exist in the model: {unknown}")
    names = set(skip)
    return lambda name, module: (SKIP, "named in skip") if name in names else None


def _is_peft(module: nn.Module) -> bool:
    """A PEFT tuner layer or wrapper, recognised by its base classes' names and package (no peft import)."""
    return any(c.__name__ in PEFT_BASES and c.__module__.split(".")[0] == "peft" for c in type(module).__mro__)


def _inside(name: str, owners: list[str]) -> bool:
    """Whether module ``name`` is a descendant of one of the modules named ``owners``."""
    return any(name.startswith(f"{owner}.") if owner else name != "" for owner in owners)


def _unsupported(module: nn.Module) -> bool:
    return any(isinstance(module, kinds) for kinds in UNSUPPORTED_TYPES.values())


def _parametrized(module: nn.Module) -> bool:
    hooks = module._forward_pre_hooks.values()
    return parametrize.is_parametrized(module) or any(type(h).__name__ in NORM_HOOKS for h in hooks)


def _holders(model: nn.Module) -> dict[int, list[str]]:
    """Every qualified name each parameter (by identity) is registered under."""
    holders: dict[int, list[str]] = defaultdict(list)
    for name, p in model.named_parameters(remove_duplicate=False):
        holders[id(p)].append(name)
    return holders


def _tied(name: str, module: nn.Module, holders: dict[int, list[str]]) -> tuple[str, str] | None:
    own = f"{name}." if name else ""
    elsewhere = sorted({other for p in module.parameters() for other in holders[id(p)] if not other.startswith(own)})
    return (TIED, f"shares parameters with {', '.join(elsewhere)}") if elsewhere else None
