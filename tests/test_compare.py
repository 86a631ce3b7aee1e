"""``tdecomp compare`` statistics: Student-t intervals (checked against scipy.stats.t), paired
differences, n = 1 rows, refusing to pool runs that differ in more than the seed, one count per seed,
and a default output folder of its own."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
import scipy.stats
import yaml

from tdecomp.cli import main
from tdecomp.records import load_runs
from tdecomp.results import PAIRED_FIELDS, ROW_STAT_FIELDS, aggregate
from tdecomp.stats import estimate, paired_difference

METHOD_SETTINGS = {"SI+FD": {"init": "spectral", "reg": "fd"}, "random+WD": {"init": "random", "reg": "wd"},
                   "dense": {"family": "dense"}}


def write_run(root: Path, name: str, acc: float, **config) -> Path:
    run = root / name
    run.mkdir(parents=True)
    run.joinpath("config.yaml").write_text(yaml.safe_dump({"model": "cnn", "family": "lowrank", "rank": 0.1,
                                                           "epochs": 10, "out": str(run), **config}))
    run.joinpath("summary.json").write_text(json.dumps(
        {"test_acc": acc, "params": 100, "dense_params": 1000, "param_ratio": 0.1, "time_s": 1.0}))
    return run


def write_method(root: Path, method: str, accs: dict[int, float], **config) -> None:
    for seed, acc in accs.items():
        write_run(root, f"{method}-{config.get('rank', 0.1)}-s{seed}", acc, seed=seed, model_kwargs={},
                  **{**METHOD_SETTINGS[method], **config})


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_interval_is_scipys_student_t(n):
    rng = random.Random(n)
    values = [rng.gauss(90, 2) for _ in range(n)]
    got = estimate(values)
    mean, sem = statistics.fmean(values), statistics.stdev(values) / math.sqrt(n)
    low, high = scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    assert got.n == n and got.mean == pytest.approx(mean) and got.std == pytest.approx(statistics.stdev(values))
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12)
    assert got.resolved == (low > 0 or high < 0)


def test_one_value_has_no_spread_and_paired_uses_shared_seeds_only():
    assert estimate([3.0]) == estimate([3.0]) and estimate([3.0]).std is None and estimate([3.0]).low is None
    diff = paired_difference({0: 5.0, 1: 7.0, 2: 6.0, 7: 100.0}, {0: 4.0, 1: 5.0, 2: 6.0, 9: -100.0})
    assert diff == estimate([1.0, 2.0, 0.0])
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def test_one_seed_rows_print_no_zero_spread(tmp_path, capsys):
    write_method(tmp_path / "runs", "SI+FD", {0: 0.9})
    assert main(["compare", str(tmp_path / "runs"), "--by", "family,method,rank", "--pivot", "rank",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| lowrank | SI+FD | 0.1 | 90.00 | — | — | 1 |" in out and "| lowrank | SI+FD | 90.00 (1) |" in out
    assert "± 0.00" not in out and "0.00 ±" not in out


def test_paired_differences_against_a_method_and_against_dense(tmp_path):
    root = tmp_path / "runs"
    base = {0: 0.80, 1: 0.84, 2: 0.82, 3: 0.90}
    si_fd = {0: 0.85, 1: 0.86, 2: 0.86, 4: 0.99}  # seed 3 lacks an SI+FD run, seed 4 a baseline run
    dense = {0: 0.95, 1: 0.96, 2: 0.97, 3: 0.95, 4: 0.96}
    for rank in (0.1, 0.05):
        write_method(root, "random+WD", base, rank=rank)
        write_method(root, "SI+FD", si_fd, rank=rank)
    write_method(root, "dense", dense, rank=0.5)
    keys = ("family", "method", "rank")
    rows = {(r["method"], r["rank"]): r for r in aggregate(load_runs([root]), keys, paired_vs="random+WD")}
    expected = estimate([100 * (si_fd[s] - base[s]) for s in (0, 1, 2)])
    row = rows["SI+FD", "0.05"]
    assert row["pairs"] == 3 and (row["diff_mean"], row["diff_low"], row["diff_high"]) == pytest.approx(
        (expected.mean, expected.low, expected.high))
    assert rows["random+WD", "0.1"]["pairs"] == 0 and rows["random+WD", "0.1"]["diff_mean"] is None
    assert rows["dense", "—"]["pairs"] == 0  # dense has no random+WD row of its own
    vs_dense = {(r["method"], r["rank"]): r for r in aggregate(load_runs([root]), keys, paired_vs="dense")}
    assert vs_dense["random+WD", "0.1"]["pairs"] == 4
    assert vs_dense["random+WD", "0.1"]["diff_mean"] == pytest.approx(
        statistics.fmean(100 * (base[s] - dense[s]) for s in base))
    # a row is its grouping keys plus the declared statistics (the figure tells lines apart by the rest)
    assert all(set(r) == {*keys, *ROW_STAT_FIELDS, *PAIRED_FIELDS} for r in vs_dense.values())
    assert rows["SI+FD", "0.1"]["trained_params"] == 100  # summaries without trained_params: params
    with pytest.raises(ValueError, match="no row has that method"):
        aggregate(load_runs([root]), keys, paired_vs="SI+WD")
    with pytest.raises(ValueError, match="needs method"):
        aggregate(load_runs([root]), ("family", "rank"), paired_vs="dense")


def test_paired_column_in_the_printed_table(tmp_path, capsys):
    root = tmp_path / "runs"
    write_method(root, "random+WD", {0: 0.80, 1: 0.82})
    write_method(root, "SI+FD", {0: 0.85, 1: 0.86})
    assert main(["compare", str(root), "--by", "family,method,rank", "--paired-vs", "random+WD",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    diff = estimate([5.0, 4.0])
    assert "Δ vs random+WD (95% CI) | pairs |" in out
    assert f"| +{diff.mean:.2f} [{diff.low:.2f}, {diff.high:.2f}] | 2 |" in out


def test_runs_differing_in_more_than_the_seed_are_not_pooled(tmp_path, capsys):
    root = tmp_path / "runs"
    write_method(root, "SI+FD", {0: 0.9, 1: 0.8})
    write_run(root, "longer", 0.95, seed=2, epochs=20, model_kwargs={"width": 2}, **METHOD_SETTINGS["SI+FD"])
    assert main(["compare", str(root), "--by", "family,method,rank", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "epochs (10, 20)" in err and "model_kwargs.width (null, 2)" in err
    assert "--by family,method,rank,epochs,model_kwargs.width" in err and "\n" not in err.strip()
    rows = aggregate(load_runs([root]), ("family", "method", "rank", "epochs", "model_kwargs.width"))
    assert [r["n"] for r in rows] == [2, 1]


def test_a_seed_counts_once(tmp_path):
    root = tmp_path / "runs"
    write_method(root, "SI+FD", {0: 0.9, 1: 0.8})
    assert [r["n"] for r in aggregate(load_runs([root, root / "SI+FD-0.1-s0"]))] == [2]  # overlapping roots
    write_run(root / "copy", "again", 0.7, seed=1, **METHOD_SETTINGS["SI+FD"])
    with pytest.raises(ValueError, match="both seed 1"):
        aggregate(load_runs([root]))


def test_default_output_is_a_folder_of_its_own(tmp_path, monkeypatch):
    root = tmp_path / "sweep"
    write_method(root, "SI+FD", {0: 0.9, 1: 0.8})
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(root)]) == 0
    assert (tmp_path / "comparisons" / "sweep" / "comparison.md").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["SI+FD-0.1-s0", "SI+FD-0.1-s1"]


def test_val_metric_reads_the_validation_split(tmp_path):
    """``metric="val_acc"`` tabulates summary["val_acc"] (tuning), never test_acc, under its own label."""
    for seed, (val, test) in enumerate([(0.50, 0.90), (0.70, 0.10)]):
        run = write_run(tmp_path, f"s{seed}", test, seed=seed, **METHOD_SETTINGS["SI+FD"])
        summary = json.loads(run.joinpath("summary.json").read_text())
        run.joinpath("summary.json").write_text(json.dumps({**summary, "val_acc": val}))
    (row,) = aggregate(load_runs([tmp_path]), keys=("method",), metric="val_acc")
    assert row["metric_mean"] == pytest.approx(60.0) and row["metric"] == "validation acc (%)"
    with pytest.raises(ValueError, match="val_bleu"):
        aggregate(load_runs([tmp_path]), keys=("method",), metric="val_bleu")
