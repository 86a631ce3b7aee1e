"""Method labels (decision D): init and reg labels, the -norebal suffix, every label reachable as a
sweep method, and the table order (dense, baseline inits before SI, WD before FD)."""

from __future__ import annotations

import pytest
import yaml

from tdecomp.config import CHOICES
from tdecomp.experiments.sweep import expand, load_sweep
from tdecomp.init import FACTORIZED_INIT_METHODS
from tdecomp.methods import METHOD_ORDER, METHODS, method_label


@pytest.mark.parametrize("config,label", [
    ({"family": "dense", "init": "random", "reg": "wd"}, "dense"),
    ({"family": "cp", "init": "spectral", "reg": "fd"}, "SI+FD"),
    ({"family": "cp", "init": "random", "reg": "wd"}, "random+WD"),
    ({"family": "lowrank", "init": "kaiming-factors", "reg": "wd"}, "kaiming+WD"),
    ({"family": "lowrank", "init": "fanout-factors", "reg": "crs"}, "fanout+CRS"),
    ({"family": "lowrank", "init": "fairseq-factors", "reg": "none"}, "fairseq+none"),
    ({"family": "tt", "init": "spectral", "reg": "fd", "rebalance": False}, "SI+FD-norebal"),
    ({"family": "tt", "init": "kaiming-factors", "reg": "fd", "rebalance": False}, "kaiming+FD-norebal"),
    ({"family": "tt", "init": "spectral", "reg": "fd", "rebalance": True}, "SI+FD"),
    ({"family": "tt", "init": "spectral", "reg": "fd", "rebalance": None}, "SI+FD"),
    ({"family": "tt", "init": "spectral", "reg": "wd", "rebalance": False}, "SI+WD"),  # only FD rebalances by default
    ({"family": "tt"}, "SI+FD"),  # TrainConfig's defaults: spectral, fd
    ({"family": "tucker", "init": "whitened", "reg": "fd"}, "whitened+FD"),
])
def test_method_label(config, label):
    assert method_label(config) == label


def test_every_init_and_reg_has_a_label_and_fd_a_norebal_twin():
    factorized = {label: s for label, s in METHODS.items() if label != "dense"}
    assert {(s["init"], s["reg"]) for s in factorized.values()} == {
        (i, r) for i in FACTORIZED_INIT_METHODS for r in CHOICES["reg"]}
    assert len(factorized) == len(FACTORIZED_INIT_METHODS) * (len(CHOICES["reg"]) + 1)  # + FD without rebalancing
    for label, settings in factorized.items():
        assert method_label({"family": "cp", **settings}) == label


def test_table_order_dense_then_baseline_inits_before_si_and_wd_before_fd():
    assert METHOD_ORDER[0] == "dense" and set(METHOD_ORDER) == set(METHODS)
    position = METHOD_ORDER.index
    for init in ("random", "kaiming", "fanout", "fairseq"):
        for reg in ("WD", "FD", "CRS", "none"):
            assert position(f"{init}+{reg}") < position(f"SI+{reg}")
        assert position(f"{init}+WD") < position(f"{init}+FD") < position(f"{init}+FD-norebal")
    assert position("SI+WD") < position("random+FD")  # the paper's columns: random+WD, SI+WD, random+FD, SI+FD
    assert position("SI+FD") < position("whitened+FD")  # the data-aware SI after it


def test_the_sweep_accepts_every_label_and_labels_its_jobs_alike(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": "cnn", "data": "digits", "family": "lowrank",
                                    "sweep": {"method": list(METHODS)}}))
    jobs = expand(load_sweep(path, root=tmp_path / "root"))
    assert [method_label(j.config.to_dict()) for j in jobs] == list(METHODS)
    assert "lowrank_SI+FD-norebal" in {j.name for j in jobs} and "lowrank_kaiming+WD" in {j.name for j in jobs}


def test_a_norm_matched_run_is_its_own_method():
    base = {"family": "lowrank", "init": "spectral", "reg": "none"}
    assert method_label(base) == "SI+none"
    assert method_label({**base, "norm_match": "runs/fd/dynamics.jsonl"}) == "SI+none-norm-matched"
