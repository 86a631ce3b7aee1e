"""A Markdown table of the dynamics figures' aggregate values, one column per run.

The figures of :mod:`tdecomp.analysis.plots` draw, in their first panel, an aggregate over the layers
factorized in some run (a dense run: its own layers of the same names). This table prints those
aggregates at the first and last recorded step, and at any other ``steps`` asked for (the nearest
record), beside the final accuracies, so that numbers quoted beside the figures come from the same
records (``tdecomp plot RUN … --table``, and ``tdecomp docs-tables`` for a ``plot`` block).

Rows: final train and test accuracy (%, last epoch of ``metrics.jsonl``); √Σ_l‖W_l‖²_F; mean_l
η/‖W_l‖²_F; mean_l one step's angular update; mean_l ‖W_l‖_* and ½Σ_k‖F_k‖²_F (dense: "—"); mean_l
balancedness (dense: "—"); mean_l stable rank ‖W_l‖²_F/σ₁².
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .plots import Run, _aggregate, _layers, _mean, _root_sum_sq

# (row label, dynamics metric, reduction over layers, number format)
QUANTITIES: tuple[tuple[str, str, Callable[[list[float]], float], str], ...] = (
    ("√Σ‖W‖²_F", "norm", _root_sum_sq, ".3g"),
    ("mean η/‖W‖²_F", "eta_over_norm_sq", _mean, ".3g"),
    ("mean angular update per step (rad)", "angle_step", _mean, ".2g"),
    ("mean ‖W‖_*", "nuclear", _mean, ".4g"),
    ("mean ½Σ_k‖F_k‖²_F", "nuclear_bound", _mean, ".4g"),
    ("mean balancedness", "balancedness", _mean, ".3g"),
    ("mean stable rank", "stable_rank", _mean, ".3g"),
)


def _at(series: tuple[list[float], list[float]], step: float) -> float | None:
    """The value of the record nearest to ``step`` (``None`` without records)."""
    steps, values = series
    if not steps:
        return None
    return values[min(range(len(steps)), key=lambda i: abs(steps[i] - step))]


def _final(run: Run, key: str) -> str:
    values = [m[key] for m in run.metrics if m.get(key) is not None]
    return f"{100 * values[-1]:.2f}" if values else "—"


def dynamics_table(runs: Sequence[Run], steps: Sequence[float] = ()) -> str:
    """The table described in the module docstring for ``runs`` (:func:`tdecomp.analysis.plots.load_runs`)."""
    layers = _layers(runs)
    recorded = sorted({rec["step"] for r in runs for rec in r.dynamics})
    if not recorded:
        raise ValueError("no run has dynamics.jsonl: train with track_every=N for the dynamics table")
    at = sorted({recorded[0], *steps, recorded[-1]})
    lines = ["| quantity | step | " + " | ".join(r.label for r in runs) + " |",
             "|---|---|" + "---|" * len(runs),
             "| final train acc (%) | last | " + " | ".join(_final(r, "train_acc") for r in runs) + " |",
             "| final test acc (%) | last | " + " | ".join(_final(r, "test_acc") for r in runs) + " |"]
    for label, metric, reduce, fmt in QUANTITIES:
        series = [_aggregate(r, layers, metric, reduce) for r in runs]
        for step in at:
            values = [_at(s, step) for s in series]
            if all(v is None for v in values):
                continue
            cells = ["—" if v is None else format(v, fmt) for v in values]
            lines.append(f"| {label} | {step:g} | " + " | ".join(cells) + " |")
    note = (f"\nAggregates over the layers {', '.join(layers)} (a dense run: its own layers of these names); "
            "a value at a step is the nearest record's.\n")
    return "\n".join(lines) + "\n" + note
