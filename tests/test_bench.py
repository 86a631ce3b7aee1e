"""Benchmark machinery on tiny shapes (well-formed outputs, no timing assertions), and the layer
cost model behind ``implementation="auto"`` against torch's independent FLOP counter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import tdecomp
from tdecomp.bench import Settings, report
from tdecomp.bench import run as run_bench
from tdecomp.bench.layers import ConvCase, tltorch_conv
from tdecomp.bench.timing import Stats, environment, paired_ratio
from tdecomp.cli import main
from tests.helpers import (
    DENSE_CASES,
    FAMILIES,
    make_dense,
)

TINY = Settings(
    ratios=(0.1,), batch_sizes=(2,), repeats=2, warmup=0, cases=(ConvCase("tiny", 8, 6),),
    init_models=("resnet20",), si_solvers=("exact", "auto"), tltorch_layers=1, fd_models=("resnet20",), fd_batch=2,
    command="test",
)
CANDIDATES = 1 + 3 * len(FAMILIES) + 2 * 3  # dense, tdecomp × 3 implementations, tltorch cp/tucker/tt × 2


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
@pytest.mark.parametrize("case", tuple(DENSE_CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_macs_per_sample_match_torch_flop_counter(family, case, implementation):
    module, x = make_dense(case)
    layer = tdecomp.factorize(module, family, 0.5, init="random", implementation=implementation)
    x2 = torch.cat([x, x])
    counted = _flops(lambda: layer(x2)) - _flops(lambda: layer(x))  # 2 FLOPs per MAC, batch-independent parts cancel
    assert 2 * (layer.macs(x2.shape) - layer.macs(x.shape)) == counted


def test_auto_picks_reconstructed_only_when_it_is_cheaper():
    conv = nn.Conv2d(64, 64, 3, padding=1)
    small = tdecomp.factorize(conv, "tucker", 0.1, init="random")
    assert small.choose_implementation((128, 64, 16, 16)) == "factorized"
    overcomplete = tdecomp.factorize(nn.Linear(32, 32), "lowrank", 3.0, init="random")
    assert overcomplete.overcomplete
    # U M Vᵀ costs r(m + n) > mn per row: past the cost of building W once, the dense op wins
    assert overcomplete.choose_implementation((4096, 32)) == "reconstructed"
    for layer, shape in ((small, (128, 64, 16, 16)), (overcomplete, (4096, 32))):
        chosen = layer.choose_implementation(shape)
        other = ({"factorized", "reconstructed"} - {chosen}).pop()
        assert layer.macs(shape, chosen) < layer.macs(shape, other)


@pytest.mark.parametrize("family", FAMILIES)
def test_channels_last_input_gives_channels_last_output(family):
    x = torch.randn(2, 8, 7, 7).to(memory_format=torch.channels_last)
    for impl in ("factorized", "reconstructed"):
        conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        layer = tdecomp.factorize(conv, family, 0.5, init="random", implementation=impl)
        assert layer(x).is_contiguous(memory_format=torch.channels_last)


def test_stats_quartiles_match_numpy():
    seconds = [0.003, 0.001, 0.004, 0.002, 0.010]
    stats = Stats.of(seconds)
    q1, median, q3 = np.percentile(np.array(seconds) * 1e3, [25, 50, 75])
    assert (stats.q1_ms, stats.median_ms, stats.q3_ms) == pytest.approx((q1, median, q3))
    assert paired_ratio([2.0, 3.0, 8.0], [1.0, 1.0, 2.0]) == 3.0


@pytest.mark.parametrize("family", ["cp", "tucker", "tt"])
def test_tltorch_baseline_has_the_same_budget_and_computes_a_conv(family):
    conv = nn.Conv2d(6, 8, 3, padding=1, bias=False)
    ours = tdecomp.factorize(conv, family, 0.3, init="random")
    theirs = tltorch_conv(conv, family, "factorized", ours)
    extra = ours.rank[0] if family == "cp" else 0  # tltorch's CP weights λ are parameters
    assert sum(p.numel() for p in theirs.parameters()) == ours.num_params + extra
    x = torch.randn(2, 6, 5, 5)
    with tdecomp._tltorch.pytorch_backend():
        weight = theirs.weight.to_tensor().reshape(8, 6, 3, 3) if family != "tt" else None
        out = theirs(x)
    assert out.shape == (2, 8, 5, 5)
    if weight is not None:
        torch.testing.assert_close(out, nn.functional.conv2d(x, weight, padding=1), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_results():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `tdecomp bench` does: threads stall on a busy shared CPU
    try:
        return run_bench(TINY, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)


def test_tiny_run_writes_well_formed_json_markdown_and_figure(tiny_results, tmp_path):
    paths = report.write(tiny_results, tmp_path)
    assert {p.name for p in paths} == {"bench.json", "bench.md", "layers.png"}
    data = json.loads((tmp_path / "bench.json").read_text())
    assert set(data) >= {"environment", "settings", "headline", "layers", "init", "surgery", "fd"}
    rows = data["layers"]
    assert len(rows) == CANDIDATES and len({r["name"] for r in rows}) == CANDIDATES
    for r in rows:
        assert r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] and r["repeats"] == TINY.repeats
        if r["implementation"] == "reconstructed":
            assert r["flop_ratio"] >= 1.0  # the dense conv plus building W
    dense = next(r for r in rows if r["name"] == "dense")
    assert dense["vs_dense"] == 1.0 and dense["flop_ratio"] == 1.0
    autos = [r for r in rows if r["implementation"] == "auto"]
    assert len(autos) == len(FAMILIES) and all(r["auto_choice"] in ("factorized", "reconstructed") for r in autos)
    assert {r["family"] for r in rows if "vs_tltorch" in r} == {"cp", "tucker", "tt"}
    assert {h["family"] for h in data["headline"]} == set(FAMILIES)
    inits = ("spectral", "random")
    assert {(r["family"], r["init"]) for r in data["surgery"]} == {(f, i) for f in FAMILIES for i in inits}
    assert all(abs(r["model_param_ratio"] - 0.1) < 0.05 for r in data["surgery"])
    assert [r["family"] for r in data["fd"]] == sorted(FAMILIES)
    ours = [r for r in data["init"] if r["library"] == "tdecomp"]
    assert {(r["family"], r["si_solver"]) for r in ours} == {(f, s) for f in FAMILIES for s in TINY.si_solvers}
    error = {(r["family"], r["si_solver"]): r["mean_rel_error"] for r in ours}
    assert all(0 < error[f, "exact"] < 1 for f in FAMILIES)
    # every ResNet-20 layer is below RANDOMIZED_SVD_MIN_DIM: auto is the exact SI, bit for bit
    assert all(error[f, "auto"] == error[f, "exact"] for f in FAMILIES)

    markdown = (tmp_path / "bench.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| tiny 8→8 @6px |")]
    assert len(table) == CANDIDATES
    for family in FAMILIES:
        assert f"\n| {family} |" in markdown


def test_cli_runs_one_suite_and_records_its_command(tmp_path):
    threads = torch.get_num_threads()
    assert main(["bench", "--suite", "surgery", "--quick", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # restored after the run
    data = json.loads((tmp_path / "bench.json").read_text())
    assert set(data) == {"environment", "settings", "surgery", "headline"}
    assert data["settings"]["command"].startswith("tdecomp bench --suite surgery")
    assert not (tmp_path / "layers.png").exists()
    assert main(["bench", "--ratios", "0,1", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--suite", "init", "--si-solvers", "fast", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--suite", "init", "--models", "resnet32x2", "--out", str(tmp_path)]) == 2


def test_train_rows_give_a_table_and_a_figure(tmp_path):
    """The report of a ``--suite train`` run (rows as :func:`tdecomp.bench.train.train_suite` makes them)."""
    def row(family, ms, vs_dense):
        return {"suite": "train", "model": "resnet32x2", "family": family, "ratio": None if family == "dense" else 0.1,
                "batch": 32, "amp": "none", "compile": "eager", "param_ratio": 1.0 if family == "dense" else 0.1,
                "median_ms": ms, "q1_ms": ms, "q3_ms": ms, "repeats": 2, "steps_per_s": 1e3 / ms,
                "vs_dense": vs_dense, "tracker_record_ms": 1.0, "track_every": 50, "tracker_overhead": 0.001}

    results = {"environment": environment(torch.device("cpu")),
               "settings": {"command": "test", "repeats": 2, "warmup": 1},
               "train": [row("dense", 100.0, 1.0), row("lowrank", 40.0, 0.4)]}
    paths = report.write(results, tmp_path)
    assert {p.name for p in paths} == {"bench.json", "bench.md", "train.png"}
    assert "| resnet32x2 | lowrank | 0.100 |" in (tmp_path / "bench.md").read_text()
