"""tdecomp compress end to end: a trained digits CNN factorized by each family at ratio 0.5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import tdecomp
from tdecomp import models
from tdecomp.cli import main
from tdecomp.config import load_config
from tdecomp.data import create as create_data
from tdecomp.train import train
from tdecomp.train.checkpoint import load_model_weights
from tests.helpers import FAMILIES

DENSE = dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", batch_size=64, epochs=4, lr=0.05,
             progress=False, family="dense")
# accuracy right after SI of the trained weights at ratio 0.5 (uniform allocation) stays within this
# of dense (97.8%); measured drops on seed 0: cp 2.8, lowrank 5.0, tucker 3.9, tt 13.6 points (random
# factors instead of SI would leave ~10% accuracy)
MARGIN = 0.15
SUMMARY_KEYS = {"test_acc", "test_acc_before_finetune", "params", "param_ratio", "flops", "dense_flops",
                "flop_ratio", "layers", "finetune_epochs", "allocation", "source"}


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("compress") / "dense"
    return out, train(load_config(None, {**DENSE, "out": str(out)}))


def _test_batch() -> torch.Tensor:
    data = create_data("digits")
    return torch.stack([data.test[i][0] for i in range(len(data.test))])


def _dense_flops_by_formula(model: nn.Module, x: torch.Tensor) -> float:
    """2 · Σ MACs of every conv (N·c_out·c_in·k_h·k_w·h_out·w_out) and Linear, per example."""
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            macs.append(output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        elif isinstance(module, nn.Linear):
            macs.append(output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return 2 * sum(macs) / len(x)


def _counted_flops(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() / len(x)


def test_dense_run_reports_flops_that_match_the_formula(dense_run):
    out, summary = dense_run
    model = models.create("cnn", width=0.5, num_classes=10, in_channels=1)
    model.load_state_dict(load_model_weights(out))
    assert summary["flops"] == pytest.approx(_dense_flops_by_formula(model, _test_batch()), rel=1e-9)
    assert summary["dense_flops"] == summary["flops"] and summary["flop_ratio"] == 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_compress_each_family(dense_run, tmp_path, family):
    source, dense = dense_run
    out = tmp_path / family
    assert main(["compress", str(source), f"family={family}", "rank=0.5", "finetune_epochs=1",
                 f"out={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert {"config.yaml", "metrics.jsonl", "last.pt"} <= {p.name for p in out.iterdir()}
    if family != "tensor_ring":  # TR-SVD keeps less of a trained layer at 0.5 (0.73–0.78 here; a TT ≥ 0.85)
        assert summary["test_acc_before_finetune"] >= dense["test_acc"] - MARGIN
    assert summary["factorized_layer_ratio"] == pytest.approx(0.5, rel=0.02)
    assert summary["param_ratio"] == pytest.approx(summary["params"] / dense["params"])

    # the per-layer table: ranks and parameters of the saved model's layers, errors of SI
    config = load_config(out / "config.yaml")
    trained = load_model_weights(source)
    if family == "lowrank":  # Eckart–Young: the error of the best rank-r approximation
        for row in summary["layers"]:
            w = trained[f"{row['name']}.weight"].double()
            o, i, kh, kw = w.shape
            s = torch.linalg.svdvals(w.permute(0, 2, 1, 3).reshape(o * kh, i * kw))
            tail = s[row["rank"][0]:].square().sum().sqrt() / s.square().sum().sqrt()
            assert row["reconstruction_error"] == pytest.approx(float(tail), rel=1e-4)
    rebuilt = models.create("cnn", width=0.5, num_classes=10, in_channels=1)
    for row in summary["layers"]:
        layer = tdecomp.factorize(rebuilt.get_submodule(row["name"]), row["family"], tuple(row["rank"]), init="random")
        parent, _, child = row["name"].rpartition(".")
        setattr(rebuilt.get_submodule(parent), child, layer)
        assert layer.num_params == row["params"] and 0 <= row["reconstruction_error"] < 1
    rebuilt.load_state_dict(load_model_weights(out))
    assert config.init_from == str(source) and config.allocation == "uniform"

    # FLOPs: as torch.utils.flop_counter counts the saved model on the test set, dense by the formula
    x = _test_batch()
    assert summary["flops"] == pytest.approx(_counted_flops(rebuilt, x), rel=1e-9)
    assert summary["dense_flops"] == pytest.approx(dense["flops"], rel=1e-9)
    assert summary["flop_ratio"] < 1


def test_compare_plots_against_flops_and_tabulates_accuracy_before_finetuning(tmp_path, capsys):
    import csv

    import yaml

    for allocation, flops, seed, before in [("uniform", 200.0, 0, 0.5), ("uniform", 220.0, 1, 0.7),
                                             ("energy", 150.0, 0, 0.9)]:
        run = tmp_path / "runs" / f"{allocation}{seed}"
        run.mkdir(parents=True)
        run.joinpath("config.yaml").write_text(yaml.safe_dump(
            {"model": "cnn", "family": "tt", "rank": 0.1, "allocation": allocation, "seed": seed}))
        run.joinpath("summary.json").write_text(json.dumps(
            {"test_acc": 0.9, "test_acc_before_finetune": before, "params": 100, "param_ratio": 0.1,
             "flops": flops, "time_s": 1.0}))
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "runs"), "--out", str(out), "--by", "family,allocation",
                 "--metric", "acc_before_finetune", "--x", "flops"]) == 0
    assert "| tt | uniform | 60.00 | 14.14 | [" in capsys.readouterr().out  # mean | std | 95% CI
    rows = {r["allocation"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    assert float(rows["uniform"]["flops"]) == 210.0 and float(rows["energy"]["flops"]) == 150.0
    assert (out / "accuracy_vs_flops.png").is_file()


def test_run_folders_written_before_the_new_keys_still_match():
    config = load_config(None, {"family": "tt"})
    older = {k: v for k, v in config.to_dict().items() if k not in ("allocation", "init_from")}
    assert config.conflicts(older) == []
    assert load_config(None, {"family": "tt", "allocation": "energy"}).conflicts(older) == ["allocation"]


def test_compress_summary_keeps_the_trainers_fields_and_validates_before_finetuning(dense_run, tmp_path):
    source, _ = dense_run
    out = tmp_path / "run"
    assert main(["compress", str(source), "family=lowrank", "rank=0.5", "val_fraction=0.2", f"out={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    (last,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    shared = {k: v for k, v in last.items() if k not in ("epoch", "step", "lr")}  # train_*, val_*, test_*, …
    assert {k: summary[k] for k in shared} == shared
    assert {"code", "versions", "device", "threads", "world_size", "best_val_acc"} <= set(summary)
    assert {"val_acc_before_finetune", "val_loss_before_finetune", "test_acc_before_finetune"} <= set(summary)
    assert 0 <= summary["val_acc_before_finetune"] <= 1


def _inputs(model: nn.Module, names: list[str], batches: list) -> dict[str, list[torch.Tensor]]:
    """What each named layer of ``model`` (eval mode) receives on each batch."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    handles = [model.get_submodule(n).register_forward_pre_hook(lambda m, args, n=n: seen[n].append(args[0]))
               for n in names]
    with torch.no_grad():
        for x, _ in batches:
            model.eval()(x)
    for h in handles:
        h.remove()
    return seen


def test_compress_reports_output_errors_on_held_out_batches_by_brute_force(dense_run, tmp_path):
    import copy

    from tdecomp.train.calibration import calibration_batches, task_calibration
    from tdecomp.train.source import source_model

    source, _ = dense_run
    outs = {}
    for init in ("spectral", "whitened"):
        outs[init] = tmp_path / init
        assert main(["compress", str(source), "family=lowrank", "rank=0.3", f"init={init}", "calibration_batches=3",
                     f"out={outs[init]}"]) == 0
    summary = json.loads((outs["whitened"] / "summary.json").read_text())
    assert summary["init"] == "whitened" and summary["calibration_batches"] == 3
    config = load_config(outs["whitened"] / "config.yaml")
    data = create_data("digits")
    calibration, held_out = calibration_batches(data, config)
    assert len(calibration) == len(held_out) == 3
    assert not any(torch.equal(a[0], b[0]) for a in calibration for b in held_out)
    # the SI the run started from: whitened by the calibration batches (lowrank SI draws nothing at random)
    dense = source_model(config, data.model_kwargs, torch.device("cpu"))
    stats = task_calibration(dense, data.task, calibration, frozenset({"gram"}))
    compressed = tdecomp.factorize_model(copy.deepcopy(dense), "lowrank", 0.3, init="whitened", calibration=stats,
                                         progress=False)
    names = [row["name"] for row in summary["layers"]]
    seen = _inputs(dense, names, held_out)
    for row in summary["layers"]:
        conv, layer = dense.get_submodule(row["name"]), compressed.get_submodule(row["name"])
        assert tuple(row["rank"]) == layer.rank
        diff = total = 0.0
        for x in seen[row["name"]]:
            exact = F.conv2d(x, conv.weight, None, conv.stride, conv.padding)
            approx = F.conv2d(x, layer.reconstruct().detach(), None, conv.stride, conv.padding)
            diff, total = diff + float((exact - approx).square().sum()), total + float(exact.square().sum())
        assert row["output_error"] == pytest.approx((diff / total) ** 0.5, rel=1e-6)
    plain = json.loads((outs["spectral"] / "summary.json").read_text())["layers"]
    mean = {init: sum(r["output_error"] for r in rows) / len(rows) for init, rows in (("spectral", plain),
                                                                                      ("whitened", summary["layers"]))}
    assert mean["whitened"] < mean["spectral"]
    assert all(r["reconstruction_error"] <= w["reconstruction_error"] + 1e-9 for r, w in zip(plain, summary["layers"]))


def test_the_grid_names_runs_by_init_and_distillation_and_prints_output_errors(dense_run, tmp_path, capsys):
    from tdecomp.experiments.compress_grid import jobs
    from tdecomp.experiments.compress_grid import main as grid
    from tdecomp.records import load_runs

    source, _ = dense_run
    names = [out.name for out, _ in jobs([str(source)], ["tt"], ["uniform", "fisher"], ["0.1"], tmp_path,
                                         ("spectral", "whitened"), ("0", "4"))]
    assert names == ["tt-uniform-0.1", "tt-uniform-0.1-distill4", "tt-fisher-0.1", "tt-fisher-0.1-distill4",
                     "tt-uniform-0.1-whitened", "tt-uniform-0.1-whitened-distill4", "tt-fisher-0.1-whitened",
                     "tt-fisher-0.1-whitened-distill4"]
    root = tmp_path / "grid"
    argv = [str(source), "--families", "lowrank", "--inits", "spectral,whitened", "--allocations", "uniform",
            "--ranks", "0.3", "--root", str(root), "--layers", "finetune_epochs=1", "progress=false"]
    assert grid(argv) == 0
    printed = capsys.readouterr().out
    outs = [root / source.name / "lowrank-uniform-0.3", root / source.name / "lowrank-uniform-0.3-whitened"]
    for out in outs:
        summary = json.loads((out / "summary.json").read_text())
        mean = sum(r["output_error"] for r in summary["layers"]) / len(summary["layers"])
        assert f"{source.name}/{out.name}" in printed and f"{mean:8.4f}" in printed
        for row in summary["layers"]:
            assert f"output error {row['output_error']:.4f}  weight error {row['reconstruction_error']:.4f}" in printed
    runs = {r.config["init"]: r for r in load_runs([root])}
    assert set(runs) == {"spectral", "whitened"} and runs["whitened"].method == "whitened+FD"
    stamp = (outs[0] / "summary.json").stat().st_mtime_ns
    assert grid(argv) == 0 and (outs[0] / "summary.json").stat().st_mtime_ns == stamp  # finished jobs are skipped


def test_compress_without_held_out_batches_reports_no_output_error(dense_run, tmp_path):
    source, _ = dense_run
    out = tmp_path / "all"  # digits: 23 training batches of 64, all of them calibrate (and give the Fisher rule)
    assert main(["compress", str(source), "family=cp", "rank=0.3", "init=whitened", "allocation=fisher",
                 "calibration_batches=40", f"out={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["allocation"] == "fisher" and summary["factorized_layer_ratio"] == pytest.approx(0.3, rel=0.02)
    layers = summary["layers"]
    assert layers and all(row["output_error"] is None and row["reconstruction_error"] < 1 for row in layers)
