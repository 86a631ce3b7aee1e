"""The surgery report: every factorized layer, every targeted layer kept dense and why, and the parameters
the model really holds (each tensor once, however many modules share it).

:func:`tdecomp.factorize_model` records on the model what it kept dense (:class:`~tdecomp.eligibility.KeptLayer`)
and the model's parameter count before its first surgery; :func:`summarize` joins that record with the
factorized layers the model holds now. ``str(report)`` is the table ``factorize_model`` logs at INFO
(the ``tdecomp`` command line prints it); :func:`log_warnings` logs at WARNING what a user might not
expect (:data:`~tdecomp.eligibility.WARNED` reasons, SI padding).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import nn

from .eligibility import WARNED, KeptLayer
from .layers.attention import FactorizedMultiheadAttention
from .layers.base import FactorizedLayer
from .layers.separable import SeparableLayer
from .layers.walk import named_outermost

log = logging.getLogger("tdecomp")

Replaceable = FactorizedLayer | FactorizedMultiheadAttention | SeparableLayer
RECORD = "_tdecomp_surgery"  # the model attribute holding its SurgeryRecord
SHOWN = 5  # names listed per warning line


@dataclass(frozen=True)
class LayerReport:
    """A factorized layer: ranks, parameters against its dense original, and a ``note`` (SI padding)."""

    name: str
    family: str
    rank: tuple[int, ...]
    params: int
    dense_params: int
    note: str = ""


@dataclass
class SurgeryRecord:
    """What surgery left on a model: the parameters it held before the first surgery, the layers kept dense."""

    dense_model_params: int
    kept: dict[str, KeptLayer] = field(default_factory=dict)


@dataclass(frozen=True)
class FactorizationReport:
    """Per-layer and total parameters of the factorized layers against their dense originals, the layers
    kept dense (``kept``), and the whole model's parameters now and before surgery (each tensor once)."""

    layers: tuple[LayerReport, ...]
    kept: tuple[KeptLayer, ...] = ()
    model_params: int | None = None
    dense_model_params: int | None = None

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def dense_params(self) -> int:
        return sum(layer.dense_params for layer in self.layers)

    @property
    def ratio(self) -> float:
        return self.params / self.dense_params if self.dense_params else math.nan

    @property
    def model_ratio(self) -> float:
        """Parameters the model holds over those it held before surgery (NaN if unknown)."""
        known = self.model_params is not None and self.dense_model_params
        return self.model_params / self.dense_model_params if known else math.nan

    def headline(self) -> str:
        line = (f"{len(self.layers)} factorized layers hold {self.params:,} parameters, "
                f"{self.ratio:.4f} of their dense {self.dense_params:,}")
        if self.kept:
            line += f"; {len(self.kept)} kept dense"
        if self.dense_model_params:
            line += (f"; the model holds {self.model_params:,} parameters, {self.model_ratio:.4f} of its "
                     f"dense {self.dense_model_params:,}")
        return line

    def __str__(self) -> str:
        rows = [f"{'layer':<40} {'family':<12} {'rank':<22} {'params':>10} {'dense':>10} {'ratio':>6}"]
        for r in self.layers:
            rows.append(f"{r.name:<40} {r.family:<12} {str(r.rank):<22} {r.params:>10,} "
                        f"{r.dense_params:>10,} {r.params / r.dense_params:>6.3f}" + (f"  {r.note}" if r.note else ""))
        for k in self.kept:
            rows.append(f"{k.name:<40} {'dense':<12} {k.type}: {k.reason}" + (f" ({k.detail})" if k.detail else ""))
        return "\n".join([*rows, self.headline()])


def num_params(model: nn.Module) -> int:
    """Parameters ``model`` holds, each tensor once (``parameters()`` skips repeats by identity)."""
    return sum(p.numel() for p in model.parameters())


def record_surgery(model: nn.Module, dense_model_params: int, kept: Iterable[KeptLayer]) -> None:
    """Add ``kept`` to the model's :class:`SurgeryRecord` (made on first surgery with ``dense_model_params``)."""
    record = model.__dict__.setdefault(RECORD, SurgeryRecord(dense_model_params))
    record.kept.update({k.name: k for k in kept})


def outermost_replaceable(model: nn.Module) -> list[str]:
    """Names of the factorized modules not inside another one (a separable block holds a TT/Tucker layer)."""
    return [name for name, _ in named_outermost(model, Replaceable)]


def summarize(model: nn.Module) -> FactorizationReport:
    """A :class:`FactorizationReport` of the factorized layers currently in ``model``, with what its
    surgery kept dense (layers factorized since are left out) and its parameter counts."""
    names = outermost_replaceable(model)
    layers = tuple(
        LayerReport(name, m.family, m.rank, m.num_params, m.spec.num_params,
                    f"SI padded: {m.si_padding}" if getattr(m, "si_padding", None) else "")
        for name in names
        for m in [model.get_submodule(name)]
    )
    record: SurgeryRecord | None = model.__dict__.get(RECORD)
    if record is None:
        return FactorizationReport(layers, model_params=num_params(model))
    kept = tuple(k for name, k in record.kept.items() if name not in set(names))
    return FactorizationReport(layers, kept, num_params(model), record.dense_model_params)


def log_warnings(report: FactorizationReport) -> None:
    """One WARNING line per surprising outcome (:data:`~tdecomp.eligibility.WARNED` reasons, SI padding)."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for k in report.kept:
        if k.reason in WARNED:
            by_reason[f"left dense ({k.reason})"].append(f"{k.name}" + (f": {k.detail}" if k.detail else ""))
    for r in report.layers:
        if r.note:
            by_reason[r.note.lower()].append(r.name)
    for what, names in by_reason.items():
        more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
        log.warning("tdecomp: %d layer(s) %s: %s%s (tdecomp.summarize(model) lists them)",
                    len(names), what, "; ".join(names[:SHOWN]), more)
