"""The one results pipeline: runs (folders or records files) → rows → tables → figures.

``tdecomp compare``, ``tdecomp sweep``, ``tdecomp demo`` and ``tdecomp docs-tables`` all call
:func:`report`; what it prints is what it writes to ``out_dir``:

- ``{stem}.md|csv|tex`` — the long table (:func:`tdecomp.results.aggregate`);
- ``{stem}_by_{pivot}.md`` — the paper layout, one column per value of ``pivot``;
- ``{stem}_contrasts.md|csv|tex`` — the contrasts (``--paired-vs``, ``--contrast``) with p-values
  adjusted over the table;
- ``accuracy_vs_{x}.png|pdf`` — metric against parameters or FLOPs; ``learning_curves.png|pdf`` with
  ``curves`` (:mod:`tdecomp.analysis.curves`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .records import load_runs
from .results import aggregate, best_rows, contrast_rows, convergence_rows, metric_spec, select_runs
from .tables import (
    paired_note,
    to_best_markdown,
    to_contrast_latex,
    to_contrast_markdown,
    to_convergence_markdown,
    to_markdown,
    to_pivot_markdown,
    write_csv,
    write_tables,
)

TABLES = ("long", "pivot", "contrasts", "convergence", "best")  # what a report prints, in this order


@dataclass
class Report:
    """The Markdown a report prints (``text``) and the files it wrote, by kind."""

    text: str
    paths: dict[str, Path] = field(default_factory=dict)


def report(
    sources: Iterable[Path | str],
    keys: Sequence[str],
    out_dir: Path | None,
    *,
    stem: str = "results",
    metric: str = "acc",
    pivot: str | None = None,
    paired_vs: str | None = None,
    contrasts: Sequence[str] = (),
    adjustment: str = "holm",
    x: str = "params",
    curves: str | None = None,
    title: str = "",
    tables: Sequence[str] | None = None,
    figure: Path | None = None,
    where: Sequence[str] = (),
    contrast_over: str = "method",
    best_over: Sequence[str] = (),
) -> Report:
    """Load ``sources`` (:func:`tdecomp.records.load_runs`), aggregate by ``keys`` and build the tables
    (long; pivot by ``pivot``; contrasts of ``paired_vs``/``contrasts``, adjusted by ``adjustment``) and
    figures (accuracy vs ``x``; learning curves with a panel per value of the row key ``curves``).

    ``best_over``: row keys whose combinations compete for the best (:func:`tdecomp.results.best_rows`), the
    "best" table. ``contrast_over``: the row key whose values ``contrasts`` combine (``method``; ``family`` for
    ``"cp - lowrank"``). ``where``: only the runs with these ``KEY=VALUE`` config values
    (:func:`tdecomp.results.select_runs`).
    ``tables``: which of :data:`TABLES` the text holds (default: every table asked for; the convergence
    table only when named). ``out_dir``:
    where the tables and figures go (``None``: nowhere). ``figure``: also write *the* figure of this
    report (the learning curves with ``curves``, else accuracy vs ``x``) to exactly this path."""
    keys = tuple(keys)
    runs = load_runs(sources)
    if where:
        runs = select_runs(runs, where)
        if not runs:
            raise ValueError(f"no run matches {' and '.join(where)}")
    rows = aggregate(runs, keys, metric, paired_vs, contrasts, adjustment, contrast_over)
    compared = (contrast_rows(runs, keys, metric, paired_vs, contrasts, adjustment, contrast_over)
                if paired_vs or contrasts else [])
    group_keys = [k for k in keys if k != contrast_over]
    parts = {"long": to_markdown(rows, keys) + paired_note(rows, adjustment, sum(r["p"] is not None for r in compared))}
    if pivot:
        parts["pivot"] = to_pivot_markdown(rows, keys, pivot)
    if compared:
        parts["contrasts"] = to_contrast_markdown(compared, group_keys, adjustment, metric_spec(metric)[1])
    if best_over:
        best = best_rows(runs, keys, best_over, metric, adjustment)
        parts["best"] = to_best_markdown(best, [k for k in keys if k not in best_over], best_over, adjustment,
                                         metric_spec(metric)[1])
    shown = list(parts) if tables is None else list(tables)
    if "convergence" in shown:
        parts["convergence"] = to_convergence_markdown(convergence_rows(runs, keys), keys)
    for name in shown:
        if name not in TABLES:
            raise ValueError(f"table {name!r} is not one of {', '.join(TABLES)}")
        if name not in parts:
            needs = {"pivot": "--pivot", "best": "--best-over"}.get(name, "--contrast or --paired-vs")
            raise ValueError(f"table {name!r} needs {needs}")
    result = Report("\n".join(parts[name] for name in shown))
    if out_dir is not None:
        result.paths.update(write_tables(rows, keys, out_dir, stem))
        if pivot:
            result.paths["pivot"] = out_dir / f"{stem}_by_{pivot}.md"
            result.paths["pivot"].write_text(parts["pivot"])
        if compared:
            result.paths["contrasts"] = out_dir / f"{stem}_contrasts.md"
            result.paths["contrasts"].write_text(parts["contrasts"])
            write_csv(compared, out_dir / f"{stem}_contrasts.csv")
            (out_dir / f"{stem}_contrasts.tex").write_text(to_contrast_latex(compared, group_keys, adjustment))
        result.paths.update(_figures(rows, runs, keys, out_dir, metric, x, curves, title))
    if figure is not None:
        figure.parent.mkdir(parents=True, exist_ok=True)
        _figure(rows, runs, keys, figure, metric, x, curves, title, formats=(figure.suffix,))
        result.paths["figure"] = figure
    return result


def _figure(rows, runs, keys, path: Path, metric: str, x: str, curves: str | None, title: str,
            formats: Sequence[str]) -> list[Path]:
    """One figure written as ``path`` with each suffix of ``formats``."""
    from tdecomp.analysis.compare import accuracy_vs_params_figure
    from tdecomp.analysis.curves import learning_curves_figure
    from tdecomp.analysis.style import save_figure

    fig = (learning_curves_figure(runs, keys, panel=curves, metric=metric, title=title) if curves
           else accuracy_vs_params_figure(rows, title, x))
    return save_figure(fig, path, formats)


def _figures(rows, runs, keys, out_dir: Path, metric: str, x: str, curves: str | None,
             title: str) -> dict[str, Path]:
    """``accuracy_vs_{x}.png|pdf`` and, with ``curves``, ``learning_curves.png|pdf`` in ``out_dir``."""
    paths = {"figure": _figure(rows, runs, keys, out_dir / f"accuracy_vs_{x}", metric, x, None, title,
                               (".png", ".pdf"))[0]}
    if curves:
        paths["curves"] = _figure(rows, runs, keys, out_dir / "learning_curves", metric, x, curves, title,
                                  (".png", ".pdf"))[0]
    return paths
