"""Run folders → results tables: load ``config.yaml`` + ``summary.json``, aggregate over seeds.

A *method* names how a factorized model was initialized and regularized, as in the paper's
tables: ``SI+FD`` (spectral init, Frobenius decay), ``random+WD`` (random init, weight decay on
factors), etc.; dense runs are ``dense``.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


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
        found += sorted(p.parent for p in root.rglob("summary.json")) if root.is_dir() else []
    return found


def load_runs(roots: Iterable[Path | str]) -> list[RunResult]:
    """Finished runs under ``roots``; ``FileNotFoundError`` if there are none."""
    roots = list(roots)
    runs = [
        RunResult(
            p, yaml.safe_load((p / "config.yaml").read_text()), json.loads((p / "summary.json").read_text())
        )
        for p in find_runs(roots)
    ]
    if not runs:
        raise FileNotFoundError(
            f"no finished run (a folder with summary.json) under {', '.join(map(str, roots))}"
        )
    return runs


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(
    runs: Sequence[RunResult], keys: Sequence[str] = ("model", "family", "method", "rank")
) -> list[dict]:
    """One row per distinct ``keys`` (``method`` is derived): mean ± sample std over seeds of
    test accuracy (in %), mean parameters, parameter ratio and wall time."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        fields = {**run.config, "method": run.method}
        groups[tuple(str(fields.get(k)) for k in keys)].append(run)
    rows = []
    for key, members in groups.items():
        acc_mean, acc_std = _mean_std([100 * r.summary["test_acc"] for r in members])
        rows.append(
            {
                **dict(zip(keys, key)),
                "seeds": len(members),
                "test_acc_mean": acc_mean,
                "test_acc_std": acc_std,
                "params": round(statistics.fmean(r.summary["params"] for r in members)),
                "param_ratio": statistics.fmean(r.summary["param_ratio"] for r in members),
                "time_s": statistics.fmean(r.summary["time_s"] for r in members),
            }
        )
    return sorted(rows, key=lambda r: tuple(r[k] for k in keys))


def _cells(row: dict, keys: Sequence[str], pm: str) -> list[str]:
    return [
        *(str(row[k]) for k in keys),
        f"{row['test_acc_mean']:.2f} {pm} {row['test_acc_std']:.2f}",
        f"{row['params']:,}",
        f"{row['param_ratio']:.3f}",
        f"{row['time_s']:.1f}",
        str(row["seeds"]),
    ]


def to_markdown(rows: Sequence[dict], keys: Sequence[str]) -> str:
    header = [*keys, "test acc (%)", "params", "param ratio", "time (s)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(r, keys, "±")) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_latex(rows: Sequence[dict], keys: Sequence[str]) -> str:
    header = [*keys, "test acc (\\%)", "params", "param ratio", "time (s)", "seeds"]
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
