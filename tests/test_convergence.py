"""The convergence table (``compare --tables convergence``) and run selection (``--where``), against
hand computations on run folders written as the trainer writes them."""

from __future__ import annotations

import json

import pytest

from tdecomp.records import load_runs
from tdecomp.results import convergence_rows, late_loss_change, select_runs
from tests.test_records import write_run_folder


def set_curve(run, losses, train_acc, decay):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line, loss in zip(lines, losses):
        line["train_loss"] = loss
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "train_acc": train_acc, "decay_integral": decay}))


def test_late_change_spans_the_last_fifth_of_the_epochs():
    # 10 epochs: the last 20% are epochs 9 and 10, measured from the end of epoch 8
    losses = [9, 8, 7, 6, 5, 4, 3, 2.0, 1.5, 1.8]
    assert late_loss_change(losses) == pytest.approx((1.8 - 2.0) / 2.0)
    assert late_loss_change([1.0, 0.5]) == pytest.approx(-0.5)  # at least one epoch back
    assert late_loss_change([1.0]) is None


def test_plateau_is_judged_on_the_seed_mean_curve(tmp_path):
    # two seeds, 5 epochs (window: epoch 4 → 5): single seeds move by −20% and +12%, their mean by −5%
    for seed, (losses, acc) in enumerate([([4, 3, 2, 1.0, 0.8], 0.99), ([4, 3, 2, 1.0, 1.12], 0.995)]):
        run = write_run_folder(tmp_path, f"dense_seed-{seed}", seed, epochs=5, family="dense")
        set_curve(run, losses, acc, 0.2 + seed / 10)
    (row,) = convergence_rows(load_runs([tmp_path]), ["method"])
    assert row["loss_change"] == pytest.approx((0.96 - 1.0) / 1.0)
    assert row["loss_change_max"] == pytest.approx(0.2)
    assert row["plateau"] is True
    assert row["train_acc_mean"] == pytest.approx(99.25) and row["train_acc_min"] == pytest.approx(99.0)
    assert row["decay_integral"] == pytest.approx(0.25)


def test_where_keeps_matching_runs_and_the_dense_baseline(tmp_path):
    write_run_folder(tmp_path, "dense_seed-0", 0, family="dense")
    for rank in (0.1, 0.05):
        write_run_folder(tmp_path, f"lowrank_rank-{rank}_seed-0", 0, rank=rank)
    runs = load_runs([tmp_path])
    kept = select_runs(runs, ["rank=0.05"])
    assert sorted(r.name for r in kept) == ["dense_seed-0", "lowrank_rank-0.05_seed-0"]
    assert [r.name for r in select_runs(runs, ["family=dense"])] == ["dense_seed-0"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        select_runs(runs, ["rank"])


def test_compare_prints_the_convergence_table_of_the_selected_runs(tmp_path, capsys):
    from tdecomp.cli import main

    for seed in (0, 1):
        write_run_folder(tmp_path / "runs", f"dense_seed-{seed}", seed, family="dense")
        for rank in (0.1, 0.05):
            write_run_folder(tmp_path / "runs", f"lowrank_rank-{rank}_seed-{seed}", seed, rank=rank)
    assert main(["compare", str(tmp_path / "runs"), "--by", "family,method,rank", "--where", "rank=0.1",
                 "--tables", "convergence", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| dense | dense | — | 2 |" in printed and "| lowrank | SI+FD | 0.1 | 2 |" in printed
    assert "0.05" not in printed.split("\n\n")[0]
