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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import run_files

DENSE_IRRELEVANT = ("rank", "init", "reg")
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
    """Finished runs under ``roots``; ``FileNotFoundError`` if there are none."""
    roots = list(roots)
    runs = [
        RunResult(
            p, yaml.safe_load((p / run_files.CONFIG).read_text()), json.loads((p / run_files.SUMMARY).read_text())
        )
        for p in find_runs(roots)
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


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(
    runs: Sequence[RunResult], keys: Sequence[str] = ("model", "family", "method", "rank"), metric: str = "acc"
) -> list[dict]:
    """One row per distinct ``keys`` (``method`` is derived): mean ± sample std over seeds of
    the headline ``metric`` (``summary["test_<metric>"]``, one of :data:`METRICS`; accuracy in %),
    mean parameters, parameter ratio, FLOPs per example and wall time. Rows carry the metric's column label."""
    from ._validation import check_choice

    check_choice("metric", metric, tuple(METRICS))
    label, scale = METRICS[metric]
    missing = [str(r.path) for r in runs if f"test_{metric}" not in r.summary]
    if missing:
        raise ValueError(f"metric={metric!r}: runs without test_{metric} in summary.json: {', '.join(missing[:3])}")
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        fields = {**run.config, "method": run.method}
        if run.method == "dense":  # a dense run has no rank/init/reg: one baseline row, not one per rank
            fields.update(dict.fromkeys(DENSE_IRRELEVANT, "—"))
        groups[tuple(str(_field(fields, k)) for k in keys)].append(run)
    rows = []
    for key, members in groups.items():
        mean, std = _mean_std([scale * r.summary[f"test_{metric}"] for r in members])
        rows.append(
            {
                **dict(zip(keys, key)),
                "seeds": len(members),
                "metric": label,
                "metric_mean": mean,
                "metric_std": std,
                "params": round(statistics.fmean(r.summary["params"] for r in members)),
                "param_ratio": statistics.fmean(r.summary["param_ratio"] for r in members),
                # forward FLOPs per example (runs from before FLOPs were recorded have none)
                "flops": statistics.fmean(r.summary.get("flops", math.nan) for r in members),
                "time_s": statistics.fmean(r.summary["time_s"] for r in members),
            }
        )
    return sorted(rows, key=lambda r: tuple(_order(r[k]) for k in keys))


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


def _cells(row: dict, keys: Sequence[str], pm: str) -> list[str]:
    return [
        *(str(row[k]) for k in keys),
        f"{row['metric_mean']:.2f} {pm} {row['metric_std']:.2f}",
        f"{row['params']:,}",
        f"{row['param_ratio']:.3f}",
        f"{row['time_s']:.1f}",
        str(row["seeds"]),
    ]


def _label(rows: Sequence[dict]) -> str:
    return rows[0]["metric"] if rows else METRICS["acc"][0]


def to_markdown(rows: Sequence[dict], keys: Sequence[str]) -> str:
    header = [*keys, _label(rows), "params", "param ratio", "time (s)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(r, keys, "±")) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_pivot_markdown(rows: Sequence[dict], keys: Sequence[str], column: str) -> str:
    """Paper layout: one column per value of ``column`` (e.g. ``rank``), cells "acc ± std"; a row
    whose ``column`` is "—" (dense) fills every column."""
    if column not in keys:
        raise ValueError(f"pivot column {column!r} is not one of the row keys {list(keys)}")
    row_keys = [k for k in keys if k != column]
    values = list(dict.fromkeys(str(r[column]) for r in rows if r[column] != "—"))
    cells: dict[tuple, dict[str, str]] = defaultdict(dict)
    for r in rows:
        text = f"{r['metric_mean']:.2f} ± {r['metric_std']:.2f}"
        for value in values if r[column] == "—" else [str(r[column])]:
            cells[tuple(str(r[k]) for k in row_keys)][value] = text
    header = [*row_keys, *(f"{column}={v}" for v in values)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([*key, *(row.get(v, "") for v in values)]) + " |" for key, row in cells.items()]
    return "\n".join(lines) + "\n"


def to_latex(rows: Sequence[dict], keys: Sequence[str]) -> str:
    header = [*keys, _label(rows).replace("%", "\\%"), "params", "param ratio", "time (s)", "seeds"]
    body = [" & ".join(c.replace("_", "\\_") for c in _cells(r, keys, "$\\pm$")) + " \\\\" for r in rows]
    return (
        "\n".join(
            [
                f"\\begin{{tabular}}{{{'l' * len(keys)}rrrrr}}",
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
