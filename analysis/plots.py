"""Figures of one or more runs: training curves and the norm / effective-step-size dynamics.

Every run is drawn in its method's colour with its family's marker (:mod:`tdecomp.analysis.style`,
shared with :mod:`tdecomp.analysis.compare`); each legend lists the runs the figure draws. The
dynamics figures read
``dynamics.jsonl`` (:class:`~tdecomp.analysis.dynamics.DynamicsTracker`) and show one panel per layer that
is factorized in at least one of the runs (all layers if none is), after a first panel
aggregating over those layers; a dense run is drawn on the same panels from its own
``nn.Linear``/``nn.Conv2d`` of the same name. :func:`plot_runs` writes them all as PNG and PDF:

- ``training_curves`` — train loss, test loss and test accuracy per epoch;
- ``weight_norm`` — ‖W‖_F per layer, aggregate √Σ_l‖W_l‖²_F;
- ``effective_step`` — η/‖W‖²_F per layer, aggregate mean (the paper's central picture: dense
  vs Frobenius decay vs weight decay on the factors);
- ``angular_update`` — one step's angular update (solid) against √(2ηλ/(1+α)) (dashed, drawn
  once, in grey, where several runs share it);
- ``nuclear_norm`` — ‖W‖_* (solid) against ½Σ_k‖F_k‖²_F (dashed);
- ``balancedness`` — the factors' conserved-Gram-difference norm;
- ``stable_rank`` — ‖W‖²_F/σ₁².
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdecomp import yaml_values
from tdecomp.methods import method_label
from tdecomp.run_files import CONFIG, DYNAMICS, METRICS

from .dynamics import layer_series, read_dynamics
from .style import FALLBACK_COLOURS, family_marker, method_colour


@dataclass
class Run:
    """A run folder's config, per-epoch metrics and (if tracked) dynamics records."""

    path: Path
    label: str
    config: dict[str, Any]
    metrics: list[dict] = field(default_factory=list)
    dynamics: list[dict] = field(default_factory=list)
    colour: str = ""
    marker: str = ""
    phase: float = 0.0  # where along a line its markers start (a fraction of their spacing)


def run_label(config: dict[str, Any]) -> str:
    """``dense``, or family and method (``lowrank SI+FD``, ``lowrank SI+none-norm-matched``)."""
    if config.get("family", "dense") == "dense":
        return "dense"
    return f"{config['family']} {method_label(config)}"


def load_run(path: str | Path) -> Run:
    """Read a run folder (``config.yaml``, ``metrics.jsonl``, optional ``dynamics.jsonl``)."""
    path = Path(path)
    config_file = path / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no config.yaml)")
    config = yaml_values.load(config_file.read_text()) or {}
    metrics_file = path / METRICS
    metrics = [json.loads(x) for x in metrics_file.read_text().splitlines() if x] if metrics_file.is_file() else []
    dynamics = read_dynamics(path) if (path / DYNAMICS).is_file() else []
    return Run(path, run_label(config), config, metrics, dynamics)


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """:func:`load_run` for each folder; duplicate labels get the folder name appended."""
    runs = [load_run(p) for p in paths]
    labels = [r.label for r in runs]
    used: set[tuple[str, str]] = set()
    for k, r in enumerate(runs):
        r.phase = k / len(runs)  # runs whose lines coincide still show every run's markers
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.path.name})"
        family = r.config.get("family", "dense")
        r.colour = method_colour(method_label(r.config))
        r.marker = family_marker(family)
        spare = (c for c in FALLBACK_COLOURS if (c, r.marker) not in used)
        if (r.colour, r.marker) in used:  # the same family and method twice: keep the lines apart
            r.colour = next(spare, r.colour)
        used.add((r.colour, r.marker))
    return runs


# ---------------------------------------------------------------------------------------- helpers
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot(ax, run: Run, steps: Sequence[float], values: Sequence[float], style: str = "-", **kw) -> None:
    """A run's line: its colour, its family's marker on about eight points."""
    every = max(1, len(steps) // 8)
    ax.plot(steps, values, style, color=run.colour, marker=run.marker, markevery=(round(run.phase * every), every),
            markersize=4, linewidth=kw.pop("linewidth", 1.3), **kw)


def _legend(fig, runs: Sequence[Run], extra: Sequence = ()) -> None:
    """One entry per run that the figure draws (and any ``extra`` handles), above the panels."""
    plt = _pyplot()
    handles = [plt.Line2D([], [], color=r.colour, marker=r.marker, markersize=4, label=r.label) for r in runs]
    handles += list(extra)
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 4), fontsize=8, frameon=False)


def _layers(runs: Sequence[Run]) -> list[str]:
    """Layers factorized in some run (all tracked layers if none is), in module order."""
    names = list(dict.fromkeys(n for r in runs for rec in r.dynamics for n in rec["layers"]))
    factorized = [n for n in names if any(rec["layers"].get(n, {}).get("family", "dense") != "dense"
                                          for r in runs for rec in r.dynamics)]
    return factorized or names


def _aggregate(run: Run, layers: Sequence[str], metric: str, reduce: Callable[[list[float]], float]):
    """(steps, values): ``reduce`` over ``layers`` at the steps where every one has ``metric``."""
    steps, values = [], []
    for rec in run.dynamics:
        entries = [rec["layers"].get(n, {}) for n in layers]
        if entries and all(metric in e for e in entries):
            steps.append(rec["step"])
            values.append(reduce([e[metric] for e in entries]))
    return steps, values


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _root_sum_sq(xs: list[float]) -> float:
    return math.sqrt(sum(x * x for x in xs))


def _layer_figure(
    runs: Sequence[Run],
    metrics: Sequence[str],
    ylabel: str,
    *,
    reduce: Callable[[list[float]], float] = _mean,
    reduce_name: str = "mean over layers",
    log: bool = False,
    note: str = "",
    reference: str = "",
):
    """A panel grid: the aggregate over :func:`_layers`, then one panel per layer. ``metrics[0]``
    is drawn solid, a second one dashed in the same colour (its legend entry is the run's). With
    ``reference`` (a legend label), the second metric is a reference curve: drawn once per distinct
    curve, in grey where several runs share it."""
    plt = _pyplot()
    layers = _layers(runs)
    panels = 1 + len(layers)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows + 0.6), layout="constrained",
                             squeeze=False)
    axes = axes.ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    titles = [f"all layers ({reduce_name})", *layers]
    drawn: list[Run] = []
    for k, metric in enumerate(metrics):
        curves = [{"": _aggregate(run, layers, metric, reduce)} | {name: (s, v) for name, s, v in
                                                                    layer_series(run.dynamics, metric)}
                  for run in runs]
        for i, run in enumerate(runs):
            for ax, name in zip(axes, ["", *layers]):
                steps, values = curves[i].get(name, ([], []))
                if not steps:
                    continue
                if k == 0:
                    _plot(ax, run, steps, values)
                    drawn += [] if run in drawn else [run]
                    continue
                if not reference:
                    _plot(ax, run, steps, values, "--", linewidth=1.0)
                    continue
                same = [j for j, other in enumerate(curves) if _same_curve(other.get(name), (steps, values))]
                if same[0] == i:  # the first run with this curve draws it, grey if others share it
                    ax.plot(steps, values, "--", color="0.45" if len(same) > 1 else run.colour, linewidth=1.0)
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if log and ax.get_lines():
            ax.set_yscale("log")
    extra = [plt.Line2D([], [], color="0.45", linestyle="--", label=reference)] if reference and drawn else []
    _legend(fig, drawn, extra)
    if note:
        fig.supxlabel(note, fontsize=8)
    return fig


def _same_curve(curve: tuple[Sequence[float], Sequence[float]] | None, target: tuple[Sequence, Sequence]) -> bool:
    """Whether ``curve`` (steps, values) equals ``target`` to rounding."""
    if curve is None or list(curve[0]) != list(target[0]):
        return False
    return all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(curve[1], target[1]))


# ---------------------------------------------------------------------------------------- figures
def training_curves(runs: Sequence[Run]):
    """Train loss, test loss and test accuracy (%) against the epoch, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.6), layout="constrained")
    panels = (
        ("train_loss", 1.0, "train loss (cross-entropy, nats)"),
        ("test_loss", 1.0, "test loss (cross-entropy, nats)"),
        ("test_acc", 100.0, "test accuracy (%)"),
    )
    for ax, (key, scale, ylabel) in zip(axes, panels):
        for run in runs:
            points = [(m["epoch"], scale * m[key]) for m in run.metrics if key in m]
            if points:
                _plot(ax, run, *zip(*points))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    _legend(fig, runs)
    return fig


def weight_norm(runs: Sequence[Run]):
    return _layer_figure(runs, ["norm"], r"$\|W\|_F$", reduce=_root_sum_sq, reduce_name=r"$\sqrt{\sum_l \|W_l\|_F^2}$")


def effective_step(runs: Sequence[Run]):
    return _layer_figure(runs, ["eta_over_norm_sq"], r"$\eta/\|W\|_F^2$ (per step)", log=True)


def angular_update(runs: Sequence[Run]):
    return _layer_figure(
        runs, ["angle_step", "equilibrium"], "angular update per step (rad)", log=True,
        note=r"solid: measured $\arccos \langle W_{t-1}, W_t\rangle / (\|W_{t-1}\| \|W_t\|)$; "
        r"dashed: equilibrium $\sqrt{2\eta\lambda/(1+\alpha)}$",
        reference=r"equilibrium $\sqrt{2\eta\lambda/(1+\alpha)}$ (shared)",
    )


def nuclear_norm(runs: Sequence[Run]):
    return _layer_figure(
        runs, ["nuclear", "nuclear_bound"], "norm (weight units)", log=True,
        note=r"solid: nuclear norm $\|W_{\mathrm{mat}}\|_*$; dashed: $\frac{1}{2}\sum_k \|F_k\|_F^2$ "
        r"(bounds $\|W\|_*$ for two factors)",
    )


def balancedness(runs: Sequence[Run]):
    return _layer_figure(runs, ["balancedness"], "balancedness (weight units$^2$)", log=True,
                         note=r"low-rank: $\|U^\top U - V^\top V\|_F$; tensor families: their conserved "
                         "Gram differences")


def stable_rank(runs: Sequence[Run]):
    return _layer_figure(runs, ["stable_rank"], r"stable rank $\|W\|_F^2/\sigma_1^2$")


FIGURES: dict[str, Callable] = {
    "training_curves": training_curves,
    "weight_norm": weight_norm,
    "effective_step": effective_step,
    "angular_update": angular_update,
    "nuclear_norm": nuclear_norm,
    "balancedness": balancedness,
    "stable_rank": stable_rank,
}


def plot_runs(paths: Sequence[str | Path], out: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Every figure of :data:`FIGURES` for the runs at ``paths``, written to ``out``; the dynamics
    figures only if some run has ``dynamics.jsonl``. Returns the files written."""
    return write_figures(load_runs(paths), out, formats)


def write_figures(runs: Sequence[Run], out: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """:func:`plot_runs` for runs already read (:func:`load_runs`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    tracked = any(r.dynamics for r in runs)
    written = []
    for name, make in FIGURES.items():
        if name != "training_curves" and not tracked:
            continue
        fig = make(runs)
        for fmt in formats:
            target = out / f"{name}.{fmt}"
            fig.savefig(target, dpi=150)
            written.append(target)
        plt.close(fig)
    return written
