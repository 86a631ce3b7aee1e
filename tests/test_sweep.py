"""Sweeps: grid expansion and naming, skip/resume, dry run, Slurm job specs, torchrun commands, and
``tdecomp compare`` on fake run folders."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import scipy.stats
import yaml

from tdecomp import models
from tdecomp.cli import main
from tdecomp.config import load_config
from tdecomp.experiments.launchers import run_local, slurm_parameters, submit_slurm, torchrun_command
from tdecomp.experiments.sweep import METHODS, expand, job_status, load_sweep, parse_items, table_keys
from tdecomp.methods import method_label
from tdecomp.train import Callback, train

# a tiny but real training: quarter-width CNN on 128 digits, 1 epoch (about a second)
TINY = dict(model="cnn", model_kwargs={"width": 0.25}, data="digits", subset=128, batch_size=64, epochs=1,
            lr=0.05, device="cpu")


def write_yaml(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def tiny_sweep(tmp_path: Path, items=(), **sweep) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", {**TINY, "sweep": sweep or {"method": ["dense", "SI+FD"],
                                                                        "family": ["lowrank"]}})


# ---------------------------------------------------------------------------------- expansion
def test_parse_items_splits_axes_from_fixed_overrides():
    fixed, axes = parse_items(["epochs=3", "rank=0.1,0.05", "method=SI+FD,random+WD", "rank2=[8,8,3,3],[4,4,3,3]",
                               "model_kwargs.width=1,2"])
    assert fixed == {"epochs": 3}
    assert axes == {"rank": [0.1, 0.05], "method": ["SI+FD", "random+WD"], "rank2": [[8, 8, 3, 3], [4, 4, 3, 3]],
                    "model_kwargs.width": [1, 2]}
    with pytest.raises(ValueError, match="key=value"):
        parse_items(["epochs"])


def test_methods_are_labelled_as_results_tables_label_runs():
    for label, settings in METHODS.items():
        assert method_label({"family": "dense" if label == "dense" else "lowrank", **settings}) == label
    assert {"dense", "random+WD", "SI+WD", "random+FD", "SI+FD"} <= set(METHODS)


def test_grid_is_the_product_with_one_dense_baseline_per_seed(tmp_path):
    families, ranks, seeds = ["lowrank", "cp", "tucker", "tt"], [0.1, 0.05], [0, 1]
    methods = ["dense", "random+WD", "SI+WD", "random+FD", "SI+FD"]
    path = write_yaml(tmp_path / "c.yaml", {**TINY, "rank": 0.5, "sweep": {
        "family": families, "method": methods, "rank": ranks, "seed": seeds}})
    jobs = expand(load_sweep(path, root=tmp_path / "root"))
    factorized = [j for j in jobs if j.config.family != "dense"]
    dense = [j for j in jobs if j.config.family == "dense"]
    assert len(factorized) == len(families) * 4 * len(ranks) * len(seeds)
    assert sorted(j.name for j in dense) == ["dense_seed-0", "dense_seed-1"]
    assert all(j.config.rank == 0.5 for j in dense)  # the base value, not an axis value
    brute = {(f, m, r, s) for f in families for m in methods[1:] for r in ranks for s in seeds}
    got = {(j.config.family, method_label(j.config.to_dict()), j.config.rank, j.config.seed) for j in factorized}
    assert got == brute
    assert len({j.name for j in jobs}) == len(jobs)
    assert all(Path(j.config.out) == tmp_path / "root" / j.name for j in jobs)
    assert "lowrank_SI+FD_rank-0.05_seed-1" in {j.name for j in jobs}
    assert [j.name for j in expand(load_sweep(path, root=tmp_path / "root"))] == [j.name for j in jobs]


def test_command_line_axes_overrides_and_errors(tmp_path):
    path = tiny_sweep(tmp_path)
    sweep = load_sweep(path, ["seed=0", "epochs=2", "model_kwargs.width=0.25,0.5", "rank=0.2,0.3"], tmp_path / "r")
    jobs = expand(sweep)
    assert all(j.config.epochs == 2 for j in jobs)
    names = {j.name for j in jobs}
    assert "lowrank_SI+FD_model_kwargs.width-0.5_rank-0.3" in names and "dense_model_kwargs.width-0.25" in names
    assert len(jobs) == 2 + 4
    with pytest.raises(ValueError, match="method='SI\\+XX'"):
        load_sweep(path, ["method=SI+XX,dense"])
    with pytest.raises(ValueError, match="same|folder"):  # two configs whose values print alike
        expand(load_sweep(path, ["model_kwargs.width=[1],1"], tmp_path / "x"))
    assert table_keys(jobs) == ("family", "method", "model_kwargs.width", "rank")


def test_family_all_is_every_registered_family(tmp_path):
    from tdecomp.layers import available_families

    path = write_yaml(tmp_path / "c.yaml", {**TINY, "sweep": {"family": "all", "method": ["dense", "SI+FD"]}})
    jobs = expand(load_sweep(path, root=tmp_path / "root"))
    assert [j.config.family for j in jobs] == ["dense", *available_families()]
    jobs = expand(load_sweep(tiny_sweep(tmp_path), ["family=all"], tmp_path / "root"))
    assert {j.config.family for j in jobs} == {"dense", *available_families()}


# ---------------------------------------------------------------------------------- skip / resume
class Crash(Callback):
    def on_epoch_end(self, trainer, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt


def test_status_skip_and_resume(tmp_path):
    path = tiny_sweep(tmp_path)
    dense, lowrank = expand(load_sweep(path, ["epochs=2"], tmp_path / "root"))
    assert [job_status(dense), job_status(lowrank)] == ["new", "new"]
    with pytest.raises(KeyboardInterrupt):  # lowrank dies after epoch 1 was checkpointed
        train(load_config(None, {**lowrank.config.to_dict(), "progress": False}), [Crash()])
    before = (lowrank.out / "metrics.jsonl").read_text().splitlines()
    assert job_status(lowrank) == "partial"
    assert run_local([dense, lowrank]) == {dense.name: "trained", lowrank.name: "trained"}
    after = (lowrank.out / "metrics.jsonl").read_text().splitlines()
    assert after[0] == before[0] and len(after) == 2  # resumed: epoch 1 kept, not retrained
    assert [job_status(dense), job_status(lowrank)] == ["done", "done"]
    stamp = (dense.out / "summary.json").stat().st_mtime_ns
    assert run_local([dense, lowrank]) == {dense.name: "skipped", lowrank.name: "skipped"}
    assert (dense.out / "summary.json").stat().st_mtime_ns == stamp
    # a folder holding another configuration is never reused
    (clash,) = [j for j in expand(load_sweep(path, ["epochs=3"], tmp_path / "root")) if j.name == dense.name]
    with pytest.raises(FileExistsError, match="epochs"):
        job_status(clash)


def test_parallel_workers_train_each_job_once(tmp_path):
    jobs = expand(load_sweep(tiny_sweep(tmp_path), ["seed=0,1"], tmp_path / "root"))
    assert run_local(jobs, workers=2) == {j.name: "trained" for j in jobs}
    assert all(len((j.out / "metrics.jsonl").read_text().splitlines()) == 1 for j in jobs)
    with pytest.raises(ValueError, match="workers"):
        run_local(jobs, workers=0)


def test_overcomplete_run_reports_collapsed_parameters(tmp_path):
    summary = train(load_config(None, {**TINY, "family": "lowrank", "rank": 3.0, "progress": False,
                                       "out": str(tmp_path / "oc")}))
    dense = sum(p.numel() for p in models.create("cnn", num_classes=10, in_channels=1, width=0.25).parameters())
    assert summary["dense_params"] == dense and summary["params"] == dense and summary["param_ratio"] == 1.0
    assert summary["trained_params"] > 2 * dense


# ---------------------------------------------------------------------------------- command line
def test_dry_run_lists_jobs_and_runs_nothing(tmp_path, capsys):
    path = tiny_sweep(tmp_path)
    root = tmp_path / "root"
    assert main(["sweep", str(path), "seed=0,1", "--dry-run", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "4 jobs" in out and "[    new] lowrank_SI+FD_seed-1" in out and "[    new] dense_seed-0" in out
    assert not root.exists()


def test_sweep_runs_then_tabulates_and_reuses(tmp_path, capsys):
    path = tiny_sweep(tmp_path)
    root = tmp_path / "root"
    assert main(["sweep", str(path), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 runs trained" in out and "| lowrank | SI+FD |" in out and "| dense | dense |" in out
    assert {r["method"] for r in csv.DictReader(open(root / "results.csv"))} == {"dense", "SI+FD"}
    records = [json.loads(line) for line in (root / "records.jsonl").read_text().splitlines()]
    assert [r["run"] for r in records] == ["dense", "lowrank_SI+FD"]
    assert [len(r["curve"]["epoch"]) for r in records] == [1, 1] and "train_loss" in records[0]["curve"]
    assert (root / "learning_curves.png").is_file()
    assert main(["compare", str(root / "records.jsonl"), "--by", "family,method", "--out", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out.split("\nwrote ")[0] in out  # the sweep's table is its records' table
    assert main(["sweep", str(path), "--root", str(root)]) == 0
    assert "0 runs trained, 2 reused" in capsys.readouterr().out


def test_torchrun_command_rebuilds_the_job_config(tmp_path):
    path = tiny_sweep(tmp_path)
    job = expand(load_sweep(path, ["rank=[2,3]", "milestones=[0.3,0.6]"], tmp_path / "root"))[1]
    command = torchrun_command(job, 4)
    assert command[:5] == ["torchrun", "--nproc_per_node=4", "-m", "tdecomp.cli", "train"]
    assert command[-1] == "resume=true" and "model_kwargs.width=0.25" in command
    rebuilt = load_config(None, command[5:]).to_dict()
    assert rebuilt == {**job.config.to_dict(), "resume": True}
    with pytest.raises(ValueError, match="nproc"):
        torchrun_command(job, 0)


# ---------------------------------------------------------------------------------- Slurm (submitit)
@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch``/``srun`` stand-ins on PATH: sbatch keeps the submitted script and answers with a job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    captured = tmp_path / "sbatch_script.sh"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {captured}\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return captured


def test_slurm_array_job_spec(tmp_path, fake_slurm, capsys):
    path = tiny_sweep(tmp_path)
    root = tmp_path / "root"
    assert main(["sweep", str(path), "seed=0,1,2", "--root", str(root), "--launcher", "slurm", "--partition", "gpu",
                 "--gpus", "2", "--time", "90", "--cpus", "6", "--mem", "20", "--parallel", "3"]) == 0
    assert "submitted 6 jobs (array 4242)" in capsys.readouterr().out
    script = fake_slurm.read_text()
    for flag in ("--array=0-5%3", "--partition=gpu", "--gpus-per-node=2", "--ntasks-per-node=2", "--time=90",
                 "--cpus-per-task=6", "--mem=20GB", "--job-name=root", "--nodes=1"):
        assert f"#SBATCH {flag}\n" in script
    assert f"{root / '_submitit'}" in script and "srun" in script
    with pytest.raises(ValueError, match="gpus"):
        slurm_parameters("x", gpus=-1)


def test_slurm_jobs_run_through_submitit_debug_executor(tmp_path):
    jobs = expand(load_sweep(tiny_sweep(tmp_path), root=tmp_path / "root"))
    submitted = submit_slurm(jobs, tmp_path / "logs", slurm_parameters("t", gpus=0, cpus=1), cluster="debug")
    assert [s.result() for s in submitted] == ["trained", "trained"]
    assert all(job_status(j) == "done" for j in jobs)


# ---------------------------------------------------------------------------------- compare
def fake_run(root: Path, name: str, acc: float, seconds: float, **config) -> None:
    run = root / name
    run.mkdir(parents=True)
    run.joinpath("config.yaml").write_text(yaml.safe_dump({"model": "cnn", "rank": 0.1, **config}))
    params = 1000 if config["family"] == "dense" else 100
    run.joinpath("summary.json").write_text(json.dumps(
        {"test_acc": acc, "params": params, "dense_params": 1000, "param_ratio": params / 1000, "time_s": seconds}))


def test_compare_on_fake_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    accs = {"SI+FD": [0.91, 0.95], "random+WD": [0.80, 0.86, 0.83]}
    for seed, acc in enumerate([0.97, 0.99]):
        fake_run(runs, f"dense{seed}", acc, 10.0 + seed, family="dense", rank=0.05 * (seed + 1), seed=seed)
    for method, values in accs.items():
        init, reg = ("spectral", "fd") if method == "SI+FD" else ("random", "wd")
        for seed, acc in enumerate(values):
            fake_run(runs, f"{method}{seed}", acc, 4.0, family="tt", init=init, reg=reg, seed=seed)
    assert main(["compare", str(runs), "--out", str(tmp_path / "out"), "--by", "family,method,rank", "--pivot",
                 "rank"]) == 0
    table = capsys.readouterr().out

    def cells(values):  # mean | std | 95% CI | n, the interval from scipy's Student t
        values = [100 * v for v in values]
        mean, std, n = statistics.fmean(values), statistics.stdev(values), len(values)
        low, high = scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=std / n**0.5)
        return f"{mean:.2f} | {std:.2f} | [{low:.2f}, {high:.2f}] | {n}", f"{mean:.2f} ± {high - mean:.2f} ({n})"

    assert f"| dense | dense | — | {cells([0.97, 0.99])[0]} | 1,000 | 1.000 | 10.5 |" in table
    assert f"| tt | SI+FD | 0.1 | {cells(accs['SI+FD'])[0]} | 100 | 0.100 | 4.0 |" in table
    assert f"| tt | random+WD | 0.1 | {cells(accs['random+WD'])[0]} | 100 | 0.100 | 4.0 |" in table
    rows = list(csv.DictReader(open(tmp_path / "out" / "comparison.csv")))
    assert len(rows) == 3 and {r["method"] for r in rows} == {"dense", "SI+FD", "random+WD"}
    latex = (tmp_path / "out" / "comparison.tex").read_text()
    assert "random+WD & 0.1 & 83.00 & 3.00 & [" in latex and "\\bottomrule" in latex
    pivot = (tmp_path / "out" / "comparison_by_rank.md").read_text().splitlines()
    assert pivot[0] == "| family | method | rank=0.1 |"
    assert f"| dense | dense | {cells([0.97, 0.99])[1]} |" in pivot
    assert f"| tt | SI+FD | {cells(accs['SI+FD'])[1]} |" in pivot


def test_compare_tabulates_another_metric_and_rejects_unknown_ones(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, bleu in enumerate([30.0, 34.0]):
        fake_run(runs, f"lr{seed}", 0.5, 1.0, family="lowrank", init="spectral", reg="fd", seed=seed)
        summary = runs / f"lr{seed}" / "summary.json"
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "test_bleu": bleu}))
    assert main(["compare", str(runs), "--by", "family,method", "--metric", "bleu"]) == 0
    table = capsys.readouterr().out
    assert "| family | method | test BLEU | std |" in table and "| lowrank | SI+FD | 32.00 | 2.83 |" in table
    assert main(["compare", str(runs), "--metric", "f1"]) == 2
    assert "metric" in capsys.readouterr().err
    assert main(["compare", str(runs), "--metric", "ppl"]) == 2  # no test_ppl in these summaries
    assert "test_ppl" in capsys.readouterr().err


def test_string_values_name_the_sweep_folder_and_the_jobs_own_values(tmp_path):
    """The normalization experiment's matched runs name the same seed's FD run."""
    config = write_yaml(tmp_path / "norm.yaml", {
        "model": "cnn", "data": "digits", "family": "lowrank", "init": "spectral", "epochs": 1,
        "sweep": [{"method": ["SI+FD"], "seed": [0, 1]},
                  {"method": ["SI+none"], "norm_match": ["{root}/lowrank_SI+FD_seed-{seed}/dynamics.jsonl"],
                   "seed": [0, 1]}]})
    jobs = expand(load_sweep(config, root=tmp_path / "root"))
    matched = [j for j in jobs if j.config.norm_match]
    assert [j.name for j in matched] == ["lowrank_SI+none-norm-matched_seed-0", "lowrank_SI+none-norm-matched_seed-1"]
    assert [j.config.norm_match for j in matched] == [
        str(tmp_path / "root" / f"lowrank_SI+FD_seed-{s}" / "dynamics.jsonl") for s in (0, 1)]
    bad = write_yaml(tmp_path / "bad.yaml", {"model": "cnn", "data": "digits", "norm_match": "{nothing}/x"})
    with pytest.raises(ValueError, match="nothing"):
        expand(load_sweep(bad, root=tmp_path / "r"))
