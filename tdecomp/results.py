"""Run folders → results tables: load ``config.yaml`` + ``summary.json``, aggregate over seeds.

A *method* names how a factorized model was initialized and regularized, as in the paper's
tables: ``SI+FD`` (spectral init, Frobenius decay), ``random+WD`` (random init, weight decay on
factors), etc.; dense runs are ``dense``.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import run_files
from .config import RESUME_MAY_CHANGE
from .stats import estimate, paired_difference

# x axes of the accuracy figures: a row field → its axis label
FIGURE_AXES = {"params": "parameters (log scale)", "trained_params": "parameters while training (log scale)",
               "flops": "forward FLOPs per example (log scale)"}

DENSE_IRRELEVANT = ("rank", "init", "reg")
# config keys that may differ among the runs a row pools: the seed, and where/how a run executed
# (what a resumed run may change, except epochs); data_dir is where the same data lies; norm_match
# and init_from name the same seed's FD run (docs/dynamics.md) or trained run (tdecomp compress)
NOT_POOLED = frozenset({"seed", "data_dir", "norm_match", "init_from", *(RESUME_MAY_CHANGE - {"epochs"})})
# headline metric → (column label, scale applied to summary["test_<metric>"])
METRICS = {"acc": ("test acc (%)", 100.0), "bleu": ("test BLEU", 1.0), "ppl": ("test ppl", 1.0),
           "loss": ("test loss", 1.0), "acc_before_finetune": ("test acc before fine-tuning (%)", 100.0)}


@dataclass(frozen=True)
class RunResult:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]

    @property
    def method(self) -> str:
        return method_label(self.config)


def method_label(config: dict[str, Any]) -> str:
    """``dense`` or ``{SI|random}+{FD|WD|none}`` from a run's config."""
    if config.get("family", "dense") == "dense":
        return "dense"
    init = "SI" if config.get("init") == "spectral" else "random"
    return f"{init}+{str(config.get('reg', 'none')).upper().replace('NONE', 'none')}"


def find_runs(roots: Iterable[Path | str]) -> list[Path]:
    """Run folders (those holding ``summary.json``) at or below each root."""
    found: list[Path] = []
    for root in map(Path, roots):
        found += sorted(p.parent for p in root.rglob(run_files.SUMMARY)) if root.is_dir() else []
    return found


def load_runs(roots: Iterable[Path | str]) -> list[RunResult]:
    """Finished runs under ``roots``, each folder once even if two roots reach it;
    ``FileNotFoundError`` if there are none."""
    roots = list(roots)
    folders = dict.fromkeys(p.resolve() for p in find_runs(roots))
    runs = [
        RunResult(
            p, yaml.safe_load((p / run_files.CONFIG).read_text()), json.loads((p / run_files.SUMMARY).read_text())
        )
        for p in folders
    ]
    if not runs:
        raise FileNotFoundError(
            f"no finished run (a folder with summary.json) under {', '.join(map(str, roots))}"
        )
    return runs


def _field(values: dict[str, Any], key: str) -> Any:
    """``values[key]``, where a dotted key reaches into nested dicts (``model_kwargs.width``)."""
    if key in values:
        return values[key]
    for part in key.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": {}}`` → ``{"a.b": 1}``: nested config keys as ``--by`` names them (an empty
    dict holds no key, so ``model_kwargs: {}`` against ``{width: 2}`` differs in ``model_kwargs.width`` only)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differing_keys(members: Sequence[RunResult], ignored: Collection[str]) -> dict[str, list[str]]:
    """Config keys (dotted) whose values differ among ``members`` → their distinct values, skipping a key
    that is in ``ignored`` or lies below one (``model_kwargs`` covers ``model_kwargs.width``)."""
    flat = [_flatten(m.config) for m in members]
    differing = {}
    for key in sorted(set().union(*flat)):
        if any(key == k or key.startswith(f"{k}.") for k in ignored):
            continue
        values = list(dict.fromkeys(json.dumps(f.get(key), sort_keys=True) for f in flat))
        if len(values) > 1:
            differing[key] = values
    return differing


def group_runs(runs: Sequence[RunResult], keys: Sequence[str]) -> dict[tuple[str, ...], list[RunResult]]:
    """Runs by their values of ``keys`` (``method`` derived; a dense run's rank/init/reg read "—").

    A group pools seeds only: ``ValueError`` if its runs' configs differ in any other key that defines
    a run (naming the keys and the ``--by`` that separates them), or if two runs share a seed."""
    groups: dict[tuple[str, ...], list[RunResult]] = defaultdict(list)
    for run in runs:
        groups[tuple(str(_field(_row_fields(run), k)) for k in keys)].append(run)
    for key, members in groups.items():
        row = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
        dense = members[0].method == "dense"
        ignored = {*keys, *NOT_POOLED, *(DENSE_IRRELEVANT if dense else ())}
        differing = _differing_keys(members, ignored)
        if differing:
            found = "; ".join(f"{k} ({', '.join(v)})" for k, v in differing.items())
            raise ValueError(
                f"runs of row {row} differ in more than the seed: {found}; add those keys to the row keys "
                f"(--by {','.join([*keys, *differing])}) or compare the runs separately")
        seen: dict[Any, Path] = {}
        for run in members:
            seed = run.config.get("seed")
            if seed in seen:
                raise ValueError(f"runs of row {row}: {seen[seed]} and {run.path} are both seed {seed}; "
                                 "a seed counts once, so pass only one of them")
            seen[seed] = run.path
    return groups


def _row_fields(run: RunResult) -> dict[str, Any]:
    fields = {**run.config, "method": run.method}
    if run.method == "dense":  # a dense run has no rank/init/reg: one baseline row, not one per rank
        fields.update(dict.fromkeys(DENSE_IRRELEVANT, "—"))
    return fields


# the fields aggregate adds to a row beside its grouping keys (statistics, not keys)
ROW_STAT_FIELDS = ("metric", "metric_mean", "metric_std", "metric_low", "metric_high", "n", "params",
                   "trained_params", "param_ratio", "flops", "time_s")
# the fields --paired-vs adds to a row (statistics, not grouping keys)
PAIRED_FIELDS = ("paired_vs", "diff_mean", "diff_low", "diff_high", "pairs")


def aggregate(
    runs: Sequence[RunResult],
    keys: Sequence[str] = ("model", "family", "method", "rank"),
    metric: str = "acc",
    paired_vs: str | None = None,
) -> list[dict]:
    """One row per distinct ``keys`` (``method`` is derived, see :func:`group_runs`) with the headline
    ``metric`` (``summary["test_<metric>"]``, one of :data:`METRICS`; accuracy in %) over seeds: mean,
    sample std, n and the 95% Student-t interval (:func:`tdecomp.stats.estimate`); mean parameters,
    parameter ratio, FLOPs per example and wall time. Rows carry the metric's column label.

    ``paired_vs``: a method label; each row of another method gains the per-seed paired difference
    (row − baseline over the seeds both ran, :func:`tdecomp.stats.paired_difference`) against the row
    of that method with the same other keys (for ``dense``: the dense row of the other non-factorization keys).
    """
    from ._validation import check_choice

    check_choice("metric", metric, tuple(METRICS))
    label, scale = METRICS[metric]
    missing = [str(r.path) for r in runs if f"test_{metric}" not in r.summary]
    if missing:
        raise ValueError(f"metric={metric!r}: runs without test_{metric} in summary.json: {', '.join(missing[:3])}")
    if paired_vs is not None and "method" not in keys:
        raise ValueError(f"paired_vs={paired_vs!r} needs method among the row keys, got {list(keys)}")
    groups = group_runs(runs, keys)
    by_seed = {key: {r.config.get("seed"): scale * r.summary[f"test_{metric}"] for r in members}
               for key, members in groups.items()}
    rows = []
    for key, members in groups.items():
        fields = dict(zip(keys, key))
        stats = estimate(list(by_seed[key].values()))
        row = {
            **fields,
            "metric": label,
            "metric_mean": stats.mean,
            "metric_std": stats.std,
            "metric_low": stats.low,
            "metric_high": stats.high,
            "n": stats.n,
            "params": round(statistics.fmean(r.summary["params"] for r in members)),
            # parameters while training (an overcomplete layer at its factor count; older runs: params)
            "trained_params": round(statistics.fmean(r.summary.get("trained_params", r.summary["params"])
                                                     for r in members)),
            "param_ratio": statistics.fmean(r.summary["param_ratio"] for r in members),
            # forward FLOPs per example (runs from before FLOPs were recorded have none)
            "flops": statistics.fmean(r.summary.get("flops", math.nan) for r in members),
            "time_s": statistics.fmean(r.summary["time_s"] for r in members),
        }
        if paired_vs is not None:
            baseline = _baseline_key(fields, keys, paired_vs)
            diff = (paired_difference(by_seed[key], by_seed[baseline])
                    if baseline in by_seed and baseline != key else None)
            row.update(zip(PAIRED_FIELDS, (paired_vs, diff and diff.mean, diff and diff.low, diff and diff.high,
                                           diff.n if diff else 0)))
        rows.append(row)
    if paired_vs is not None and not any(r["method"] == paired_vs for r in rows):
        raise ValueError(f"paired_vs={paired_vs!r}: no row has that method; the rows' methods are "
                         f"{sorted({r['method'] for r in rows})}")
    return sorted(rows, key=lambda r: tuple(_order(r[k]) for k in keys))


def _baseline_key(fields: dict[str, str], keys: Sequence[str], method: str) -> tuple[str, ...]:
    """The row key of ``fields``' baseline: same keys, ``method`` replaced (dense: also family, rank, …)."""
    baseline = {**fields, "method": method}
    if method == "dense":
        baseline.update({"family": "dense", **dict.fromkeys(DENSE_IRRELEVANT, "—")})
    return tuple(baseline[k] for k in keys)


METHOD_ORDER = ("—", "dense", "random+WD", "SI+WD", "random+FD", "SI+FD")  # the paper's column order


def _order(value: str) -> tuple:
    """Sort key: dense and the methods in the paper's order first, then numbers numerically
    (rank 2.0 before 15.0), then text."""
    if value in METHOD_ORDER:
        return (0, METHOD_ORDER.index(value), "")
    try:
        return (1, float(value), "")
    except ValueError:
        return (2, 0.0, value)


def _interval(low: float | None, high: float | None) -> str:
    return "—" if low is None else f"[{low:.2f}, {high:.2f}]"


def _difference(row: dict) -> str:
    """``+1.23 [0.40, 2.06]`` (paired difference and its CI), ``+1.23 (1 pair)`` or ``—``."""
    if row.get("diff_mean") is None:
        return "—"
    interval = _interval(row["diff_low"], row["diff_high"]) if row["pairs"] > 1 else "(1 pair)"
    return f"{row['diff_mean']:+.2f} {interval}"


def _header(rows: Sequence[dict], keys: Sequence[str]) -> list[str]:
    label = rows[0]["metric"] if rows else METRICS["acc"][0]
    header = [*keys, label, "std", "95% CI", "n", "params", "param ratio", "time (s)"]
    if rows and "paired_vs" in rows[0]:
        header += [f"Δ vs {rows[0]['paired_vs']} (95% CI)", "pairs"]
    return header


def _cells(row: dict, keys: Sequence[str]) -> list[str]:
    cells = [
        *(str(row[k]) for k in keys),
        f"{row['metric_mean']:.2f}",
        "—" if row["metric_std"] is None else f"{row['metric_std']:.2f}",
        _interval(row["metric_low"], row["metric_high"]),
        str(row["n"]),
        f"{row['params']:,}",
        f"{row['param_ratio']:.3f}",
        f"{row['time_s']:.1f}",
    ]
    if "paired_vs" in row:
        cells += [_difference(row), str(row["pairs"])]
    return cells


def to_markdown(rows: Sequence[dict], keys: Sequence[str]) -> str:
    """Long table: one row per group; mean, sample std, 95% Student-t CI and n over seeds (std and CI
    read "—" for n = 1), then the paired differences when :func:`aggregate` computed them."""
    header = _header(rows, keys)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(r, keys)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _estimate_cell(row: dict) -> str:
    """``97.50 ± 0.42 (5)``: mean ± 95% CI half-width (n); ``97.50 (1)`` for one seed."""
    spread = "" if row["metric_high"] is None else f" ± {row['metric_high'] - row['metric_mean']:.2f}"
    return f"{row['metric_mean']:.2f}{spread} ({row['n']})"


def to_pivot_markdown(rows: Sequence[dict], keys: Sequence[str], column: str) -> str:
    """Paper layout: one column per value of ``column`` (e.g. ``rank``), cells "mean ± 95% CI half-width
    (n)"; a row whose ``column`` is "—" (dense) fills every column."""
    if column not in keys:
        raise ValueError(f"pivot column {column!r} is not one of the row keys {list(keys)}")
    row_keys = [k for k in keys if k != column]
    values = list(dict.fromkeys(str(r[column]) for r in rows if r[column] != "—"))
    cells: dict[tuple, dict[str, str]] = defaultdict(dict)
    for r in rows:
        for value in values if r[column] == "—" else [str(r[column])]:
            cells[tuple(str(r[k]) for k in row_keys)][value] = _estimate_cell(r)
    header = [*row_keys, *(f"{column}={v}" for v in values)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([*key, *(row.get(v, "") for v in values)]) + " |" for key, row in cells.items()]
    note = f"\n{_label(rows)}: mean ± 95% Student-t CI half-width over seeds (n seeds).\n"
    return "\n".join(lines) + "\n" + note


def _label(rows: Sequence[dict]) -> str:
    return rows[0]["metric"] if rows else METRICS["acc"][0]


def to_latex(rows: Sequence[dict], keys: Sequence[str]) -> str:
    header = [h.replace("%", "\\%") for h in _header(rows, keys)]
    body = [" & ".join(c.replace("_", "\\_") for c in _cells(r, keys)) + " \\\\" for r in rows]
    return (
        "\n".join(
            [
                f"\\begin{{tabular}}{{{'l' * len(keys)}{'r' * (len(header) - len(keys))}}}",
                "\\toprule",
                " & ".join(header) + " \\\\",
                "\\midrule",
                *body,
                "\\bottomrule",
                "\\end{tabular}",
            ]
        )
        + "\n"
    )


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_tables(
    rows: Sequence[dict], keys: Sequence[str], out_dir: Path, stem: str = "results"
) -> dict[str, Path]:
    """``stem``.md, .csv and .tex in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{stem}.{ext}" for ext in ("md", "csv", "tex")}
    paths["md"].write_text(to_markdown(rows, keys))
    write_csv(rows, paths["csv"])
    paths["tex"].write_text(to_latex(rows, keys))
    return paths
