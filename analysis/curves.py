"""Learning curves over seeds: has every method converged before its final accuracy is compared?

Top row: train loss per epoch (log scale); bottom row: validation accuracy (test accuracy for runs
without a validation split). A panel per value of one row key (the family by default), a line per
row (method colour, family marker, a linestyle per further key such as the rank): the mean over the
row's seeds with its 95% Student-t band (:func:`tdecomp.stats.estimate`; no band for one seed).
Dense rows are drawn in every panel. Runs come from run folders or records files
(:func:`tdecomp.records.load_runs`); their curves are the records' ``curve`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence

from tdecomp.methods import DENSE
from tdecomp.records import RunResult
from tdecomp.results import VALIDATION, group_runs, metric_spec
from tdecomp.stats import estimate

from .style import family_marker, method_colour

_LINESTYLES = ("-", "--", ":", "-.")
LOSS_FIELD = "train_loss"


def accuracy_field(runs: Sequence[RunResult], metric: str = "acc") -> str:
    """``val_<metric>`` if every run's curve has it, else ``test_<metric>``."""
    has_val = all(any(v is not None for v in r.curve.get(f"val_{metric}", ())) for r in runs)
    return f"{'val' if has_val else 'test'}_{metric}"


def mean_curve(runs: Sequence[RunResult], field: str, scale: float = 1.0):
    """Epochs, mean, band low and band high of ``field`` over ``runs`` (seeds), per epoch where any run
    has a value; the band is the 95% Student-t interval (the mean itself where one run has a value)."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for epoch, value in zip(run.curve.get("epoch", ()), run.curve.get(field, ())):
            if value is not None:
                by_epoch.setdefault(epoch, []).append(scale * value)
    epochs = sorted(by_epoch)
    stats = [estimate(by_epoch[e]) for e in epochs]
    return (epochs, [s.mean for s in stats], [s.mean if s.low is None else s.low for s in stats],
            [s.mean if s.high is None else s.high for s in stats])


def _fit_to_means(ax, values: Sequence[float]) -> None:
    """y limits around the mean lines with a 10% margin (a log axis: of the decades), so that the wide
    bands of few seeds (t_{0.975, 1} = 12.7 for two) are cut at the frame instead of flattening the lines."""
    import math

    values = [v for v in values if math.isfinite(v) and (v > 0 or ax.get_yscale() != "log")]
    if not values:
        return
    low, high = min(values), max(values)
    if ax.get_yscale() == "log":
        pad = (high / low) ** 0.1 if high > low else 2.0
        ax.set_ylim(low / pad, high * pad)
    else:
        pad = 0.1 * (high - low) or 1.0
        ax.set_ylim(low - pad, high + pad)


def learning_curves_figure(runs: Sequence[RunResult], keys: Sequence[str], panel: str | None = "family",
                           metric: str = "acc", title: str = ""):
    """The figure described in the module docstring for ``runs`` grouped by ``keys``
    (:func:`tdecomp.results.group_runs`), a panel per value of ``panel`` (one of ``keys``; ``None``: one panel)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if panel is not None and panel not in keys:
        raise ValueError(f"curves panel key {panel!r} is not one of the row keys {list(keys)}")
    groups = group_runs(runs, keys)
    metric = metric.removeprefix(VALIDATION)  # the validation curve is drawn whenever the runs have one
    _, label, scale = metric_spec(metric)
    field = accuracy_field(runs, metric)
    acc_label = label.replace("test", field.split("_")[0], 1)
    rows = [(dict(zip(keys, key)), members) for key, members in groups.items()]
    dense = [(f, m) for f, m in rows if m[0].method == DENSE]
    factorized = [(f, m) for f, m in rows if m[0].method != DENSE]
    panels = list(dict.fromkeys(f[panel] for f, _ in factorized)) if panel else []
    panels = panels or ["all runs"]
    lines = list(dict.fromkeys(tuple((k, v) for k, v in f.items() if k != panel) for f, _ in rows))
    extras = list(dict.fromkeys(tuple(kv for kv in line if kv[0] != "method") for line in lines))
    cols = len(panels)
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols + 0.4, 5.4), layout="constrained", sharex=True,
                             squeeze=False)
    handles: dict[str, object] = {}
    means: dict[object, list[float]] = {}  # per axes: every mean drawn (its limits follow them, not the bands)
    for col, name in enumerate(panels):
        members = [(f, m) for f, m in factorized if panel is None or f[panel] == name]
        for fields, group in [*members, *dense]:
            line = tuple((k, v) for k, v in fields.items() if k != panel)
            method = group[0].method
            style = _LINESTYLES[extras.index(tuple(kv for kv in line if kv[0] != "method")) % len(_LINESTYLES)]
            text = " ".join(v for _, v in line if v != "—") or "all runs"
            for ax, (key, factor) in zip(axes[:, col], ((LOSS_FIELD, 1.0), (field, scale))):
                epochs, mean, low, high = mean_curve(group, key, factor)
                if not epochs:
                    continue
                colour = method_colour(method)
                marker = family_marker(fields.get("family", group[0].config.get("family", DENSE)))
                (drawn,) = ax.plot(epochs, mean, color=colour, linestyle=style, marker=marker,
                                   markevery=max(1, math.ceil(len(epochs) / 8)), markersize=4, linewidth=1.2)
                ax.fill_between(epochs, low, high, color=colour, alpha=0.15, linewidth=0)
                handles.setdefault(text, drawn)
                means.setdefault(ax, []).extend(mean)
        top, bottom = axes[:, col]
        top.set_title(name, fontsize=10)
        top.set_yscale("log")
        bottom.set_xlabel("epoch")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            _fit_to_means(ax, means.get(ax, []))
    axes[0, 0].set_ylabel("train loss (log scale)")
    axes[1, 0].set_ylabel(acc_label)
    if handles:  # runs without per-epoch records (e.g. tdecomp compress) draw empty panels
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 2 * cols), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
