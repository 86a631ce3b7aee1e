"""Accuracy against parameter count: one panel per family, one line per method (mean ± std over seeds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from tdecomp.results import FIGURE_AXES, PAIRED_FIELDS, ROW_STAT_FIELDS

from .style import family_marker, method_colour, save_figure

# row fields that are statistics, not grouping keys (see tdecomp.results.aggregate)
_STATS = (*ROW_STAT_FIELDS, *PAIRED_FIELDS)
_LINESTYLES = ("-", "--", ":", "-.")
_DODGE = 0.025  # log-x offset between methods at the same parameter count, so error bars don't overlap


def _is_dense(row: dict) -> bool:
    return row.get("method") == "dense" or row.get("family") == "dense"


def _series_key(row: dict) -> tuple[tuple[str, str], ...]:
    """What a line stands for: every grouping key except the family (the panel) and the rank (x)."""
    return tuple((k, str(v)) for k, v in row.items() if k not in (*_STATS, "family", "rank"))


def _label(key: tuple[tuple[str, str], ...]) -> str:
    values = [v for k, v in key if v != "—"]
    return " ".join(values) if values else "all runs"


def _ci_bars(points: Sequence[dict]) -> list[list[float]]:
    """Asymmetric error bars: the rows' 95% confidence interval (none for a single seed)."""
    def half(r: dict, side: str) -> float:
        return math.nan if r.get(f"metric_{side}") is None else abs(r[f"metric_{side}"] - r["metric_mean"])

    return [[half(r, "low") for r in points], [half(r, "high") for r in points]]


def _compact(count: float) -> str:
    """8131 → ``8.1k``, 1.2e6 → ``1.2M``: tick labels that stay short."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return f"{count:.0f}"


def _ticks(values: Sequence[float], low: float, high: float, most: int = 5) -> list[float]:
    """Distinct ``values`` to label on a log axis from ``low`` to ``high``: evenly thinned to at most
    ``most``, each at least a sixth of the axis from the last (so labels never overlap)."""
    values = sorted(set(values))
    if len(values) > most:
        step = (len(values) - 1) / (most - 1)
        values = [values[round(k * step)] for k in range(most)]
    gap = math.log(high / low) / 6
    kept = values[:1]
    for v in values[1:]:
        if math.log(v / kept[-1]) >= gap:
            kept.append(v)
    return kept


def accuracy_vs_params_figure(rows: Sequence[dict], title: str = "", x: str = "params"):
    """Panels per family (marker = family); x = a row field named in
    :data:`tdecomp.results.FIGURE_AXES` (parameters, parameters while training or FLOPs; log scale,
    ticks at the measured counts); y = the rows' metric (test accuracy in %), one line per method
    (colour = method, linestyle = any further grouping key such as the model). Error bars are 95%
    confidence intervals (Student t over seeds); a dense baseline is a black line with its interval
    as a band across every panel. ``rows`` come from :func:`tdecomp.results.aggregate`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    dense = [r for r in rows if _is_dense(r)]
    factorized = [r for r in rows if not _is_dense(r)]
    families = list(dict.fromkeys(r.get("family", "all") for r in factorized)) or ["dense"]
    series = list(dict.fromkeys(_series_key(r) for r in factorized))
    extras = list(dict.fromkeys(tuple(kv for kv in key if kv[0] != "method") for key in series))
    cols = min(4, len(families))
    nrows = math.ceil(len(families) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols + 0.4, 2.9 * nrows + 0.8), layout="constrained",
                             sharey=True, squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(families):]:
        ax.set_visible(False)
    handles: dict[str, object] = {}
    for ax, family in zip(axes, families):
        members = [r for r in factorized if r.get("family", "all") == family]
        for k, key in enumerate(series):
            points = sorted((r for r in members if _series_key(r) == key), key=lambda r: r[x])
            if not points:
                continue
            method = dict(key).get("method", _label(key))
            style = _LINESTYLES[extras.index(tuple(kv for kv in key if kv[0] != "method")) % len(_LINESTYLES)]
            shift = math.exp(_DODGE * (k - (len(series) - 1) / 2))
            line = ax.errorbar([r[x] * shift for r in points], [r["metric_mean"] for r in points],
                               yerr=_ci_bars(points), color=method_colour(method),
                               marker=family_marker(family), linestyle=style, capsize=2.5, markersize=5,
                               linewidth=1.2)
            handles.setdefault(_label(key), line)
        for k, row in enumerate(dense):
            style = _LINESTYLES[k % len(_LINESTYLES)]
            mean = row["metric_mean"]
            low, high = row.get("metric_low"), row.get("metric_high")
            line = ax.axhline(mean, color=method_colour("dense"), linestyle=style, linewidth=1.0)
            if low is not None:
                ax.axhspan(low, high, color=method_colour("dense"), alpha=0.08, linewidth=0)
            handles.setdefault(f"{_label(_series_key(row))} ({_compact(row[x])} {x})", line)
        ax.set_xscale("log")
        measured = [r[x] for r in members]
        if measured:
            low, high = min(measured), max(measured)
            pad = max(1.15, (high / low) ** 0.08)
            ax.set_xlim(low / pad, high * pad)
            ax.xaxis.set_major_locator(FixedLocator(_ticks(measured, low / pad, high * pad)))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(lambda x, _: _compact(x))
        ax.set_title(family, fontsize=10)
        ax.set_xlabel(FIGURE_AXES[x])
        ax.grid(True, alpha=0.3)
    for ax in axes[::cols]:
        ax.set_ylabel(rows[0]["metric"] if rows else "test acc (%)")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=min(len(handles), 2 * cols),  # a one-panel figure wraps its legend instead of clipping it
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_accuracy_vs_params(rows: Sequence[dict], path: Path, title: str = "", x: str = "params") -> list[Path]:
    """:func:`accuracy_vs_params_figure` written to ``path`` as PNG and PDF."""
    return save_figure(accuracy_vs_params_figure(rows, title, x), path)
