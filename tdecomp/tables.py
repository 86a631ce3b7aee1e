"""Result rows → tables: Markdown (long and pivot), CSV and LaTeX, and the contrasts table.

Rows come from :func:`tdecomp.results.aggregate`, contrast rows from :func:`tdecomp.results.contrast_rows`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from .results import METRICS, PLATEAU_CHANGE, PLATEAU_WINDOW
from .stats import ALPHA, PERMUTATION_MAX_N

ADJUSTMENT_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "none"}


def _interval(low: float | None, high: float | None) -> str:
    return "—" if low is None else f"[{low:.2f}, {high:.2f}]"


def _p(value: float | None) -> str:
    """A p-value to 3 significant digits (``0.0496``, ``1.2e-05``); ``—`` where there is none."""
    return "—" if value is None else f"{value:.3g}"


def _difference(row: dict) -> str:
    """``+1.23 [0.40, 2.06]`` (paired difference and its CI), ``+1.23 (1 pair)`` or ``—``."""
    if row.get("diff_mean") is None:
        return "—"
    interval = _interval(row["diff_low"], row["diff_high"]) if row["pairs"] > 1 else "(1 pair)"
    return f"{row['diff_mean']:+.2f} {interval}"


def _label(rows: Sequence[dict]) -> str:
    return rows[0]["metric"] if rows else METRICS["acc"][0]


def _header(rows: Sequence[dict], keys: Sequence[str]) -> list[str]:
    header = [*keys, _label(rows), "std", "95% CI", "n", "params", "param ratio", "time (s)"]
    if rows and "paired_vs" in rows[0]:
        header += [f"Δ vs {rows[0]['paired_vs']} (95% CI)", "pairs", "p", "adj. p"]
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
        cells += [_difference(row), str(row["pairs"]), _p(row["p"]), _p(row["p_adj"])]
    return cells


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(cells) + " |" for cells in body)]) + "\n"


def _latex(header: Sequence[str], body: Sequence[Sequence[str]], left: int) -> str:
    """A booktabs tabular: ``left`` left-aligned key columns, the rest right-aligned."""
    escaped = [" & ".join(c.replace("%", "\\%").replace("_", "\\_") for c in cells) + " \\\\"
               for cells in [header, *body]]
    columns = "l" * left + "r" * (len(header) - left)
    return "\n".join([f"\\begin{{tabular}}{{{columns}}}", "\\toprule", escaped[0], "\\midrule", *escaped[1:],
                      "\\bottomrule", "\\end{tabular}"]) + "\n"


def paired_note(rows: Sequence[dict], adjustment: str, family_size: int) -> str:
    """What the p columns of a ``--paired-vs`` table are, naming the family they were adjusted over."""
    if not rows or "paired_vs" not in rows[0]:
        return ""
    return (f"\np: two-sided paired t-test; adj. p: {ADJUSTMENT_NAMES[adjustment]} over the {family_size} "
            "contrasts of this comparison (see the contrasts table).\n")


def to_markdown(rows: Sequence[dict], keys: Sequence[str]) -> str:
    """Long table: one row per group; mean, sample std, 95% Student-t CI and n over seeds (std and CI
    read "—" for n = 1), then the paired differences, p and adjusted p when :func:`aggregate` computed them."""
    return _markdown(_header(rows, keys), [_cells(r, keys) for r in rows])


def to_latex(rows: Sequence[dict], keys: Sequence[str]) -> str:
    return _latex(_header(rows, keys), [_cells(r, keys) for r in rows], len(keys))


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
    table = _markdown([*row_keys, *(f"{column}={v}" for v in values)],
                      [[*key, *(row.get(v, "") for v in values)] for key, row in cells.items()])
    return table + f"\n{_label(rows)}: mean ± 95% Student-t CI half-width over seeds (n seeds).\n"


def _contrast_header(group_keys: Sequence[str], adjustment: str) -> list[str]:
    return [*group_keys, "contrast", "n", "mean diff", "95% CI", "p", f"adj. p ({adjustment})", "perm. p", "verdict"]


def _contrast_cells(row: dict, group_keys: Sequence[str]) -> list[str]:
    return [*(str(row[k]) for k in group_keys), row["contrast"], str(row["pairs"]), f"{row['diff_mean']:+.2f}",
            _interval(row["diff_low"], row["diff_high"]), _p(row["p"]), _p(row["p_adj"]), _p(row["p_perm"]),
            "resolved" if row["resolved"] else "not resolved"]


def to_contrast_markdown(rows: Sequence[dict], group_keys: Sequence[str], adjustment: str, metric_label: str) -> str:
    """One line per contrast and group: n pairs (seeds), mean per-seed difference, its 95% Student-t CI,
    the paired-t p, the p adjusted over every line of this table, the exact sign-flip p and the verdict,
    then a note that states the family and the tests."""
    tested = sum(r["p"] is not None for r in rows)
    note = (f"\nDifferences in {metric_label} per seed (n seeds). p: two-sided paired t-test; adj. p: "
            f"{ADJUSTMENT_NAMES[adjustment]} over the m = {tested} contrasts of this table; perm. p: exact "
            f"sign-flip permutation test (n ≤ {PERMUTATION_MAX_N}); resolved: adj. p < {ALPHA:.2g}.\n")
    return _markdown(_contrast_header(group_keys, adjustment), [_contrast_cells(r, group_keys) for r in rows]) + note


def to_contrast_latex(rows: Sequence[dict], group_keys: Sequence[str], adjustment: str) -> str:
    return _latex(_contrast_header(group_keys, adjustment), [_contrast_cells(r, group_keys) for r in rows],
                  len(group_keys) + 1)


def _number(value: float | None, digits: int = 2, sign: str = "") -> str:
    return "—" if value is None else f"{value:{sign}.{digits}f}"


def to_convergence_markdown(rows: Sequence[dict], keys: Sequence[str]) -> str:
    """One line per row of :func:`tdecomp.results.convergence_rows`: final train accuracy, the late
    train-loss change, the decay integral and whether every seed sits on its plateau."""
    window = f"last {PLATEAU_WINDOW:.0%} of epochs"
    header = [*keys, "n", "final train acc (%)", "min", f"Δ train loss, {window} (%)", "single seeds: max abs Δ (%)",
              "decay integral Σηλ", "plateau"]
    body = [[*(str(r[k]) for k in keys), str(r["n"]), _number(r["train_acc_mean"]), _number(r["train_acc_min"]),
             _number(None if r["loss_change"] is None else 100 * r["loss_change"], 1, "+"),
             _number(None if r["loss_change_max"] is None else 100 * r["loss_change_max"], 1),
             _number(r["decay_integral"], 3), "yes" if r["plateau"] else "no"] for r in rows]
    note = (f"\nFinal train accuracy: the last epoch's (training mode), mean and minimum over seeds. Δ train "
            f"loss: relative change over the {window} of the epoch-mean train loss averaged over seeds (the "
            f"learning-curve figure), and the largest among single seeds; plateau: abs Δ < {PLATEAU_CHANGE:.0%}. "
            "Decay integral: Σ_t η_t·λ over the steps taken, λ the decay the run applies (tdecomp.reg_policy).\n")
    return _markdown(header, body) + note


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


def to_best_markdown(rows: Sequence[dict], group_keys: Sequence[str], competing: Sequence[str], adjustment: str,
                     metric_label: str) -> str:
    """One line per group of :func:`tdecomp.results.best_rows`: the best cell, its mean, the runner-up
    and the paired difference to it, the largest adjusted p over the group's comparisons, the verdict."""
    header = [*group_keys, f"best {' × '.join(competing)}", "mean", "cells", "runner-up", "n",
              "best − runner-up", "95% CI", f"adj. p ({adjustment})", "max adj. p vs all", "verdict"]
    body = [[*(str(r[k]) for k in group_keys), r["best"], f"{r['mean']:.2f}", str(r["cells"]), r["runner_up"],
             str(r["pairs"]), f"{r['diff_mean']:+.2f}", _interval(r["diff_low"], r["diff_high"]), _p(r["p_adj"]),
             _p(r["max_p_adj"]), "resolved best" if r["resolved"] else "not resolved"] for r in rows]
    note = (f"\n{metric_label}: the cell with the highest mean per group, paired per seed with every other cell "
            f"of its group; adj. p: {ADJUSTMENT_NAMES[adjustment]} over all m = {rows[0]['m'] if rows else 0} such "
            "comparisons "
            f"of this table; resolved best: every comparison of the group positive with adj. p < {ALPHA:.2g}.\n")
    return _markdown(header, body) + note
