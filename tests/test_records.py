"""Run records: one compact line per run (config away from the defaults, summary, rounded curve) that
reads back exactly as its run folder, so compare prints the same from either; the records command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from tdecomp.cli import main
from tdecomp.commands.compare import default_out
from tdecomp.config import TrainConfig
from tdecomp.records import ALWAYS, RunResult, curve_of, load_runs, read_records, to_record, write_records
from tdecomp.results import aggregate


def write_run_folder(root: Path, name: str, seed: int, epochs: int = 4, **config) -> Path:
    """A finished run folder as the trainer writes it (full config.yaml, metrics.jsonl, summary.json)."""
    rng = random.Random(f"{name}{seed}")
    run = root / name
    run.mkdir(parents=True)
    full = TrainConfig(**{"family": "lowrank", "rank": 0.1, "seed": seed, "out": str(run), **config}).to_dict()
    run.joinpath("config.yaml").write_text(yaml.safe_dump(full))
    lines = [{"epoch": e, "step": 10 * e, "lr": 0.1 / e, "train_loss": rng.uniform(0.1, 2), "train_acc": rng.random(),
              "test_loss": rng.uniform(0.1, 2), "test_acc": rng.random(), "time_s": 1.234 * e}
             for e in range(1, epochs + 1)]
    run.joinpath("metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    run.joinpath("summary.json").write_text(json.dumps(
        {"test_acc": lines[-1]["test_acc"], "params": 100, "param_ratio": 0.1, "time_s": 4.9, "epochs": epochs}))
    return run


def sweep_folder(root: Path) -> Path:
    for seed in (0, 1, 2):
        write_run_folder(root, f"dense_seed-{seed}", seed, family="dense")
        for init, reg in (("spectral", "fd"), ("kaiming-factors", "wd")):
            write_run_folder(root, f"lowrank_{init}_{reg}_seed-{seed}", seed, init=init, reg=reg, epochs=3,
                             model_kwargs={"width": 0.5})
    return root


def test_a_record_keeps_what_differs_from_the_defaults_and_a_rounded_curve(tmp_path):
    run = write_run_folder(tmp_path, "r", 3, init="kaiming-factors", reg="wd", lr=0.05, model_kwargs={"width": 2})
    (result,) = load_runs([run])
    record = to_record(result)
    assert record["run"] == "r" and record["summary"] == json.loads((run / "summary.json").read_text())
    assert record["config"] == {"family": "lowrank", "model": "cnn", "data": "digits", "seed": 3, "rank": 0.1,
                                "init": "kaiming-factors", "reg": "wd", "lr": 0.05, "model_kwargs": {"width": 2}}
    assert set(ALWAYS) <= set(record["config"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = record["curve"]
    assert list(curve) == ["epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]  # no time_s
    assert curve["epoch"] == [1, 2, 3, 4] and curve["step"] == [10, 20, 30, 40]
    for key in ("lr", "train_loss", "test_acc"):
        for got, exact in zip(curve[key], (m[key] for m in metrics)):
            assert got == float(f"{exact:.6g}") and got == pytest.approx(exact, rel=5e-6)
            assert len(repr(got).replace("0.", "").lstrip("0")) <= 8  # 6 significant digits (and "e-0x")


def test_compare_prints_the_same_from_records_and_from_run_folders(tmp_path, capsys):
    root = sweep_folder(tmp_path / "runs")
    records = tmp_path / "data" / "sweep.jsonl"
    assert main(["records", str(root), "--out", str(records)]) == 0
    assert "wrote 9 records" in capsys.readouterr().out
    args = ["--by", "family,method,rank", "--pivot", "rank", "--paired-vs", "kaiming+WD"]
    assert main(["compare", str(root), *args, "--out", str(tmp_path / "a")]) == 0
    from_folders = capsys.readouterr().out
    assert main(["compare", str(records), *args, "--out", str(tmp_path / "b")]) == 0
    from_records = capsys.readouterr().out
    assert from_folders.split("\nwrote ")[0] == from_records.split("\nwrote ")[0]
    assert "| lowrank | SI+FD | 0.1 |" in from_records
    for name in ("comparison.csv", "comparison_by_rank.md", "comparison_contrasts.md"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    # the same runs from a folder and a records file are the same seeds twice: refused, not pooled
    assert main(["compare", str(root), str(records), "--by", "family,method,rank", "--out", str(tmp_path / "c")]) == 2
    assert "both seed" in capsys.readouterr().err
    assert len(load_runs([records, records])) == 9  # one file twice: each run once
    assert default_out([str(records)]) == Path("comparisons") / "sweep"


def test_a_row_pools_seeds_from_run_folders_and_records_files(tmp_path):
    root = sweep_folder(tmp_path / "runs")
    records = tmp_path / "seed2.jsonl"
    write_records([r for r in load_runs([root]) if r.config["seed"] == 2], records)
    for folder in root.glob("*seed-2"):  # the folders keep seeds 0 and 1 only
        folder.rename(tmp_path / folder.name)
    rows = aggregate(load_runs([root, records]), ("family", "method", "rank"))
    assert [r["n"] for r in rows] == [3, 3, 3]


def test_records_round_trip_merge_and_refuse_name_clashes(tmp_path, capsys):
    root = sweep_folder(tmp_path / "runs")
    first = tmp_path / "a.jsonl"
    write_records(load_runs([root]), first)
    again = tmp_path / "b.jsonl"
    write_records(read_records(first), again)
    assert first.read_text() == again.read_text()  # a record reads back as the run it came from
    names = [json.loads(line)["run"] for line in first.read_text().splitlines()]
    assert names == sorted(names) and "dense_seed-0" in names
    other = sweep_folder(tmp_path / "other")
    assert main(["records", str(root), str(other), "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "two runs are named" in capsys.readouterr().err
    assert main(["records", str(root), "--out", str(tmp_path / "c.json")]) == 2
    assert "must end in .jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"run": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1 is not a run record"):
        load_runs([bad])


def test_hundreds_of_runs_fit_in_a_few_megabytes(tmp_path):
    """500 runs of 60 epochs with seven metrics each (worst case: no float shortens below 6 digits)."""
    rng = random.Random(0)
    base = TrainConfig(family="cp", init="kaiming-factors", reg="wd", epochs=60).to_dict()
    fields = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
    runs = [RunResult(f"cp_kaiming+WD_seed-{k}", "memory", {**base, "seed": k},
                      {"test_acc": rng.random(), "params": 1000, "param_ratio": 0.1, "time_s": 10.0},
                      curve_of([{"epoch": e, "step": 100 * e, **{f: rng.random() for f in fields}}
                                for e in range(1, 61)]))
            for k in range(500)]
    path = write_records(runs, tmp_path / "big.jsonl")
    assert path.stat().st_size < 3e6
