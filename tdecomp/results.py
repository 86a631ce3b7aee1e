"""Runs → result rows: group runs by config keys, aggregate each group over seeds, evaluate contrasts.

A *method* names how a factorized model was initialized and regularized (:mod:`tdecomp.methods`:
``SI+FD``, ``kaiming+WD``, …; dense runs are ``dense``). Runs come from run folders or records files
(:func:`tdecomp.records.load_runs`); the tables are written by :mod:`tdecomp.tables`, the whole
sequence by :func:`tdecomp.report.report`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from . import dotted, yaml_values
from ._validation import check_choice
from .config import RESUME_MAY_CHANGE
from .contrasts import Contrast, parse_contrast, per_seed, versus
from .methods import DENSE, DENSE_IRRELEVANT, METHOD_ORDER
from .records import RunResult
from .stats import ALPHA, PairedTest, adjust, estimate, paired_test

# x axes of the accuracy figures: a row field → its axis label
FIGURE_AXES = {"params": "parameters (log scale)", "trained_params": "parameters while training (log scale)",
               "flops": "forward FLOPs per example (log scale)"}

# config keys that may differ among the runs a row pools: the seed, and where/how a run executed
# (what a resumed run may change, except epochs); data_dir is where the same data lies; norm_match
# and init_from name the same seed's FD run (docs/dynamics.md) or trained run (tdecomp compress)
NOT_POOLED = frozenset({"seed", "data_dir", "norm_match", "init_from", *(RESUME_MAY_CHANGE - {"epochs"})})
# headline metric → (column label, scale applied to summary["test_<metric>"])
METRICS = {"acc": ("test acc (%)", 100.0), "bleu": ("test BLEU", 1.0), "ppl": ("test ppl", 1.0),
           "loss": ("test loss", 1.0), "acc_before_finetune": ("test acc before fine-tuning (%)", 100.0)}
VALIDATION = "val_"  # a metric so prefixed reads the validation split: summary["val_<metric>"]


def metric_spec(metric: str) -> tuple[str, str, float]:
    """``(summary key, column label, scale)`` of a headline metric: one of :data:`METRICS` (the test
    split, ``test_<metric>``) or ``val_`` + one of them (the validation split, for tuning)."""
    check_choice("metric", metric, (*METRICS, *(VALIDATION + m for m in METRICS)))
    base = metric.removeprefix(VALIDATION)
    label, scale = METRICS[base]
    if base != metric:
        return metric, label.replace("test", "validation", 1), scale
    return f"test_{metric}", label, scale

# the fields aggregate adds to a row beside its grouping keys (statistics, not keys)
ROW_STAT_FIELDS = ("metric", "metric_mean", "metric_std", "metric_low", "metric_high", "n", "params",
                   "trained_params", "param_ratio", "flops", "time_s")
# the fields --paired-vs adds to a row (statistics, not grouping keys)
PAIRED_FIELDS = ("paired_vs", "diff_mean", "diff_low", "diff_high", "pairs", "p", "p_adj")
# the fields of a contrast row beside its group keys
CONTRAST_FIELDS = ("contrast", "pairs", "diff_mean", "diff_low", "diff_high", "p", "p_adj", "p_perm", "resolved")


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


def _row_fields(run: RunResult) -> dict[str, Any]:
    fields = {**run.config, "method": run.method}
    if run.method == DENSE:  # a dense run has no rank/init/reg: one baseline row, not one per rank
        fields.update(dict.fromkeys(DENSE_IRRELEVANT, "—"))
    return fields


def group_runs(runs: Sequence[RunResult], keys: Sequence[str]) -> dict[tuple[str, ...], list[RunResult]]:
    """Runs by their values of ``keys`` (``method`` derived; a dense run's rank/init/reg read "—").

    A group pools seeds only: ``ValueError`` if its runs' configs differ in any other key that defines
    a run (naming the keys and the ``--by`` that separates them), or if two runs share a seed."""
    groups: dict[tuple[str, ...], list[RunResult]] = defaultdict(list)
    for run in runs:
        groups[tuple(str(dotted.get(_row_fields(run), k)) for k in keys)].append(run)
    for key, members in groups.items():
        row = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
        dense = members[0].method == DENSE
        ignored = {*keys, *NOT_POOLED, *(DENSE_IRRELEVANT if dense else ())}
        differing = _differing_keys(members, ignored)
        if differing:
            found = "; ".join(f"{k} ({', '.join(v)})" for k, v in differing.items())
            raise ValueError(
                f"runs of row {row} differ in more than the seed: {found}; add those keys to the row keys "
                f"(--by {','.join([*keys, *differing])}) or compare the runs separately")
        seen: dict[Any, str] = {}
        for run in members:
            seed = run.config.get("seed")
            if seed in seen:
                raise ValueError(f"runs of row {row}: {seen[seed]} and {run.source} are both seed {seed}; "
                                 "a seed counts once, so pass only one of them")
            seen[seed] = run.source
    return groups


# the convergence check of a comparison (show that training converged before comparing methods): a
# row is on its plateau when its learning curve (the train loss averaged over seeds, as the figures draw
# it) moved by less than PLATEAU_CHANGE (relative) over the last PLATEAU_WINDOW of the epochs
PLATEAU_WINDOW = 0.2
PLATEAU_CHANGE = 0.1


def late_loss_change(losses: Sequence[float]) -> float | None:
    """(L_E − L_e)/L_e of the train losses L_1 … L_E over the last :data:`PLATEAU_WINDOW` of the E epochs
    (e = E − round(0.2·E), at least one epoch back); ``None`` for fewer than 2 epochs."""
    if len(losses) < 2:
        return None
    start = losses[-1 - max(1, round(PLATEAU_WINDOW * len(losses)))]
    return (losses[-1] - start) / start


def convergence_rows(runs: Sequence[RunResult], keys: Sequence[str]) -> list[dict]:
    """Per row of ``keys``: n, the final train accuracy (mean and minimum over seeds, %), the relative
    train-loss change over the last 20% of epochs (:func:`late_loss_change`) of the seed-mean curve and
    its largest magnitude among the single seeds, the mean decay integral Σ_t η_t·λ, and ``plateau``:
    the seed-mean curve's change below :data:`PLATEAU_CHANGE` in magnitude (runs of unequal length:
    the epochs all of them ran)."""
    rows = []
    for key, members in group_runs(runs, keys).items():
        curves = [[v for v in r.curve.get("train_loss", []) if v is not None] for r in members]
        epochs = min(map(len, curves))
        mean = late_loss_change([statistics.fmean(c[e] for c in curves) for e in range(epochs)])
        changes = [c for c in map(late_loss_change, curves) if c is not None]
        accs = [100.0 * r.summary["train_acc"] for r in members if r.summary.get("train_acc") is not None]
        decay = [r.summary["decay_integral"] for r in members if r.summary.get("decay_integral") is not None]
        rows.append({
            **dict(zip(keys, key)),
            "n": len(members),
            "train_acc_mean": statistics.fmean(accs) if accs else None,
            "train_acc_min": min(accs) if accs else None,
            "loss_change": mean,
            "loss_change_max": max(map(abs, changes)) if changes else None,
            "decay_integral": statistics.fmean(decay) if decay else None,
            "plateau": mean is not None and abs(mean) < PLATEAU_CHANGE,
        })
    return sorted(rows, key=lambda r: tuple(_order(r[k]) for k in keys))


def select_runs(runs: Sequence[RunResult], where: Sequence[str]) -> list[RunResult]:
    """The runs whose config has every ``KEY=VALUE`` of ``where`` (values compared as YAML-parsed
    config values, dotted keys reach nested ones). A dense run matches a condition on a key that means
    nothing for it (``rank``, ``init``, ``reg``, ``rebalance``): the dense baseline stays in every selection.
    ``method`` selects by the derived method label (``method=SI+FD``), and there dense matches only itself.
    A YAML list is any of its values (``"method=[kaiming+WD, SI+FD]"``)."""
    conditions = []
    for item in where:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"where {item!r} is not of the form KEY=VALUE (e.g. rank=0.05)")
        conditions.append((key, yaml_values.load(raw)))

    def matches(run: RunResult, key: str, value) -> bool:
        if isinstance(value, list):
            return any(matches(run, key, v) for v in value)
        if key == "method":
            return run.method == str(value)
        return (run.method == DENSE and key in DENSE_IRRELEVANT) or dotted.get(run.config, key) == value

    return [r for r in runs if all(matches(r, key, value) for key, value in conditions)]


def seed_values(groups: dict[tuple[str, ...], list[RunResult]], metric: str) -> dict[tuple[str, ...], dict]:
    """Row key → seed → the headline ``metric`` (its summary key × its scale, :func:`metric_spec`)."""
    name, _, scale = metric_spec(metric)
    missing = [r.source for members in groups.values() for r in members if name not in r.summary]
    if missing:
        raise ValueError(f"metric={metric!r}: runs without {name} in summary.json: {', '.join(missing[:3])}")
    return {key: {r.config.get("seed"): scale * r.summary[name] for r in members}
            for key, members in groups.items()}


def _level_key(fields: dict[str, str], keys: Sequence[str], over: str, level: str) -> tuple[str, ...]:
    """The row key of ``level`` (a value of the key ``over``) beside ``fields`` (the other keys); for the
    method ``dense`` also family dense and rank/init/reg "—" (the dense row of the other non-factorization
    keys)."""
    row = {**fields, over: level}
    if over == "method" and level == DENSE:
        row.update({"family": DENSE, **dict.fromkeys(DENSE_IRRELEVANT, "—")})
    return tuple(row[k] for k in keys)


def contrast_family(methods: Collection[str], paired_vs: str | None = None,
                    contrasts: Sequence[str] = (), over: str = "method") -> list[Contrast]:
    """The contrasts one table evaluates and adjusts together: ``M - paired_vs`` for every method ``M``
    of ``methods`` (factorized ones unless ``paired_vs`` is dense) in table order, then each of
    ``contrasts``; a contrast with the same weights as an earlier one is left out. ``methods``: the
    values of the row key ``over`` the contrasts combine."""
    methods = sorted(methods, key=_order)
    family = []
    if paired_vs is not None:
        if paired_vs not in methods:
            raise ValueError(f"paired_vs={paired_vs!r}: no row has that method; the rows' methods are {methods}")
        family += versus([m for m in methods if m != DENSE or paired_vs == DENSE], paired_vs)
    for contrast in map(parse_contrast, contrasts):
        unknown = [m for m in contrast.methods if m not in methods]
        if unknown:
            raise ValueError(f"contrast {contrast.text!r}: no row has {over} {unknown[0]!r}; the rows' "
                             f"{over} values are {methods}")
        family.append(contrast)
    # a contrast asked twice (by --paired-vs and by --contrast) is one test, not two
    unique = {tuple(sorted(c.weights.items())): c for c in reversed(family)}
    return [c for c in family if unique[tuple(sorted(c.weights.items()))] is c]


def evaluate_contrasts(values: dict[tuple[str, ...], dict], keys: Sequence[str], family: Sequence[Contrast],
                       adjustment: str = "holm", over: str = "method") -> list[dict]:
    """One row per contrast of ``family`` and group of the other row keys where all its methods have runs:
    the group keys, the contrast, its pairs (seeds), mean and 95% CI of the per-seed contrast, the paired-t
    p, the p adjusted by ``adjustment`` over every row (:func:`tdecomp.stats.adjust`), the exact sign-flip
    p (n ≤ 10) and ``resolved`` (adjusted p < 0.05). ``values``: :func:`seed_values`. The contrasts
    combine the values of the row key ``over`` (``method``, or e.g. ``family``)."""
    if not family:
        return []
    other, position = [k for k in keys if k != over], keys.index(over)
    rows = []
    for index, contrast in enumerate(family):
        groups = dict.fromkeys(tuple(v for k, v in zip(keys, key) if k != over) for key in values
                               if key[position] in contrast.methods and key[position] != DENSE)
        for group in groups:
            fields = dict(zip(other, group))
            by_method = {m: values[k] for m in contrast.methods
                         if (k := _level_key(fields, keys, over, m)) in values}
            by_seed = per_seed(contrast, by_method) if len(by_method) == len(contrast.methods) else {}
            if not by_seed:
                continue
            test = paired_test(list(by_seed.values()))
            rows.append({**fields, "contrast": contrast.text, "pairs": test.estimate.n,
                         "diff_mean": test.estimate.mean, "diff_low": test.estimate.low,
                         "diff_high": test.estimate.high, "p": test.p, "p_perm": test.p_permutation,
                         "_order": (tuple(_order(v) for v in group), index)})
    for row, p in zip(rows, adjust([r["p"] for r in rows], adjustment)):
        row["p_adj"] = p
        row["resolved"] = p is not None and p < ALPHA
    rows.sort(key=lambda r: r.pop("_order"))
    return [{**{k: r[k] for k in other}, **{k: r[k] for k in CONTRAST_FIELDS}} for r in rows]


def aggregate(
    runs: Sequence[RunResult],
    keys: Sequence[str] = ("model", "family", "method", "rank"),
    metric: str = "acc",
    paired_vs: str | None = None,
    contrasts: Sequence[str] = (),
    adjustment: str = "holm",
    over: str = "method",
) -> list[dict]:
    """One row per distinct ``keys`` (``method`` is derived, see :func:`group_runs`) with the headline
    ``metric`` (``summary["test_<metric>"]``, one of :data:`METRICS`; accuracy in %) over seeds: mean,
    sample std, n and the 95% Student-t interval (:func:`tdecomp.stats.estimate`); mean parameters,
    parameter ratio, FLOPs per example and wall time. Rows carry the metric's column label.

    ``paired_vs``: a method label; each row of another method gains the contrast ``method − paired_vs``
    (per-seed paired difference over the seeds both ran, against the row of that method with the same
    other keys; for ``dense``: the dense row of the other non-factorization keys) with its 95% CI, p and
    p adjusted over the family of :func:`contrast_family` (``contrasts`` join that family; contrasts over
    another row key, ``over``, cannot join it and are checked only).
    """
    _check_contrast_key(keys, paired_vs, contrasts, over)
    groups = group_runs(runs, keys)
    values = seed_values(groups, metric)
    label = metric_spec(metric)[1]
    rows = []
    for key, members in groups.items():
        stats = estimate(list(values[key].values()))
        rows.append({
            **dict(zip(keys, key)),
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
        })
    if paired_vs is not None:
        methods = {r["method"] for r in rows}
        family = contrast_family(methods, paired_vs, contrasts)
        found = {(r["contrast"], *(r[k] for k in keys if k != "method")): r
                 for r in evaluate_contrasts(values, keys, family, adjustment)}
        for row in rows:
            diff = found.get((f"{row['method']} - {paired_vs}", *(row[k] for k in keys if k != "method")))
            row.update({"paired_vs": paired_vs, **{k: diff[k] if diff else None for k in PAIRED_FIELDS[1:]},
                        "pairs": diff["pairs"] if diff else 0})
    return sorted(rows, key=lambda r: tuple(_order(r[k]) for k in keys))


def contrast_rows(runs: Sequence[RunResult], keys: Sequence[str], metric: str = "acc", paired_vs: str | None = None,
                  contrasts: Sequence[str] = (), adjustment: str = "holm", over: str = "method") -> list[dict]:
    """:func:`evaluate_contrasts` of :func:`contrast_family` on ``runs`` grouped by ``keys``; ``contrasts``
    combine the values of the row key ``over`` (methods by default; e.g. ``family`` for ``"cp - lowrank"``)."""
    _check_contrast_key(keys, paired_vs, contrasts, over)
    groups = group_runs(runs, keys)
    levels = {key[keys.index(over)] for key in groups} if over in keys else set()
    return evaluate_contrasts(seed_values(groups, metric), keys,
                              contrast_family(levels, paired_vs, contrasts, over), adjustment, over)


def _check_contrast_key(keys: Sequence[str], paired_vs: str | None, contrasts: Sequence[str],
                      over: str = "method") -> None:
    if paired_vs is not None and over != "method":
        raise ValueError(f"paired_vs={paired_vs!r} compares methods; it cannot be combined with contrasts over "
                         f"{over!r} (give the contrasts as --contrast instead)")
    if (paired_vs is not None or contrasts) and over not in keys:
        what = f"paired_vs={paired_vs!r}" if paired_vs is not None else f"contrast {contrasts[0]!r}"
        raise ValueError(f"{what} needs {over} among the row keys, got {list(keys)}")


def _order(value: str) -> tuple:
    """Sort key: dense and the methods in the paper's order first, then numbers numerically
    (rank 2.0 before 15.0), then text."""
    if value == "—" or value in METHOD_ORDER:
        return (0, -1 if value == "—" else METHOD_ORDER.index(value), "")
    try:
        return (1, float(value), "")
    except ValueError:
        return (2, 0.0, value)


def best_rows(runs: Sequence[RunResult], keys: Sequence[str], competing: Sequence[str], metric: str = "acc",
              adjustment: str = "holm") -> list[dict]:
    """Which combination of the row keys ``competing`` (e.g. family, init, allocation) is best, per group
    of the other row keys (e.g. rank)? Per group the cell with the highest mean ``metric`` is paired per
    seed with every other cell (best − other, the seeds both ran); the p-values of all these comparisons
    of all groups form one family, adjusted by ``adjustment``. A cell is the *resolved* best only when
    every comparison of its group is positive with adjusted p < 0.05. Dense rows do not compete.

    Returns one row per group: the group keys, ``best`` (the cell's values joined by " × "), its mean,
    ``cells`` (how many competed), ``runner_up`` and the comparison with it (``pairs``, ``diff_mean``,
    ``diff_low``, ``diff_high``, ``p_adj``), ``max_p_adj`` over the group's comparisons, ``resolved`` and
    ``m`` (the number of comparisons adjusted together)."""
    unknown = [k for k in competing if k not in keys]
    if unknown or not competing:
        raise ValueError(f"best over {list(competing)}: each must be one of the row keys {list(keys)}")
    rest = [k for k in keys if k not in competing]
    values = seed_values(group_runs(runs, keys), metric)
    cells: dict[tuple, dict[tuple, dict]] = defaultdict(dict)
    for key, seeds in values.items():
        fields = dict(zip(keys, key))
        if fields.get("method") != DENSE and fields.get("family") != DENSE:
            cells[tuple(fields[k] for k in rest)][tuple(fields[k] for k in competing)] = seeds
    comparisons: list[_Comparison] = []
    for group, members in cells.items():
        means = {cell: statistics.fmean(seeds.values()) for cell, seeds in members.items()}
        best = max(means, key=means.__getitem__)
        for other in members:
            common = sorted(set(members[best]) & set(members[other]), key=str)
            if other != best and len(common) > 1:
                diffs = [members[best][s] - members[other][s] for s in common]
                comparisons.append(_Comparison(group, best, other, means[best] - means[other], paired_test(diffs)))
    adjusted = adjust([c.test.p for c in comparisons], adjustment)
    rows = []
    for group in cells:
        mine = [(c, p) for c, p in zip(comparisons, adjusted) if c.group == group]
        if not mine:
            continue
        runner, p_adj = min(mine, key=lambda cp: cp[0].gap)  # the closest mean: the runner-up
        ps = [p for _, p in mine]
        diff = runner.test.estimate
        rows.append({**dict(zip(rest, group)), "best": " × ".join(runner.best),
                     "mean": statistics.fmean(cells[group][runner.best].values()), "cells": len(cells[group]),
                     "runner_up": " × ".join(runner.other), "pairs": diff.n, "diff_mean": diff.mean,
                     "diff_low": diff.low, "diff_high": diff.high, "p_adj": p_adj,
                     "max_p_adj": max(ps), "m": len(comparisons),
                     "resolved": all(p is not None and p < ALPHA for p in ps)
                     and all(c.test.estimate.mean > 0 for c, _ in mine)})
    return sorted(rows, key=lambda r: tuple(_order(r[k]) for k in rest))


class _Comparison(NamedTuple):
    """The best cell of a group against one other cell: the gap of their means and the paired test."""

    group: tuple
    best: tuple
    other: tuple
    gap: float
    test: PairedTest
