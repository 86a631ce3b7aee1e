"""A family in another package: installed with an entry point in the group ``tdecomp.families``,
it is found when the registry is first queried and trains from the command line like a built-in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

RING = Path(__file__).with_name("tensor_ring.py")


def _distribution(root: Path, entry_points: str) -> Path:
    """A minimal installed distribution on ``root`` (a sys.path entry): its metadata, entry points,
    and the tensor-ring family as its module ``tdecomp_ring``."""
    info = root / "tdecomp_ring-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tdecomp-ring\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tdecomp.families]\n{entry_points}")
    (root / "tdecomp_ring.py").write_text(RING.read_text())
    return root


def _tdecomp(args: list[str], path: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "tdecomp.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_an_entry_point_family_trains_end_to_end(tmp_path):
    site = _distribution(tmp_path / "site", "tensor_ring = tdecomp_ring:TensorRingLayer\n"
                                            "broken = tdecomp_ring_missing:Nothing\n"
                                            "spec = tdecomp_ring:DenseSpec\n")
    out = tmp_path / "run"
    run = _tdecomp(["train", "family=tensor_ring", "family_options.closing_rank=3", "model=cnn", "data=digits",
                    "epochs=1", "subset=256", "batch_size=64", "model_kwargs.width=0.5", "rank=0.3", "progress=false",
                    f"out={out}"],
                   site, cwd=tmp_path)  # not the checkout: the family comes from the distribution only
    assert run.returncode == 0, run.stderr
    assert "skipping family entry point broken = tdecomp_ring_missing:Nothing (ModuleNotFoundError" in run.stderr
    assert "skipping family entry point spec = tdecomp_ring:DenseSpec (TypeError: DenseSpec is not a " in run.stderr
    summary = json.loads((out / "summary.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["family"] == "tensor_ring" and config["family_options"] == {"closing_rank": 3}
    assert summary["epochs"] == 1 and 0 <= summary["test_acc"] <= 1
    assert 0 < summary["factorized_layer_ratio"] <= 0.3 * 1.02 and summary["params"] < summary["dense_params"]
    help_text = _tdecomp(["train", "--help"], site, cwd=RING.parents[1]).stdout  # it lists the packaged configs too
    assert "  tensor_ring:\n    closing_rank=2 {1, 2, 3, 4, 5, 6, 7, 8}: size of the bond" in help_text


def test_without_the_distribution_the_family_is_unknown(tmp_path):
    run = _tdecomp(["train", "family=tensor_ring", f"out={tmp_path / 'run'}"], tmp_path, cwd=tmp_path)
    assert run.returncode == 2 and "family='tensor_ring' is not valid" in run.stderr


def test_import_tdecomp_loads_no_entry_point(tmp_path):
    """Loading is lazy: importing tdecomp imports no family package until the registry is asked."""
    site = _distribution(tmp_path / "site", "tensor_ring = tdecomp_ring:TensorRingLayer\n")
    code = ("import sys, tdecomp; before = 'tdecomp_ring' in sys.modules; "
            "names = tdecomp.available_families(); print(before, 'tdecomp_ring' in sys.modules, names)")
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=True).stdout
    assert out.strip() == "False True ('cp', 'lowrank', 'tensor_ring', 'tt', 'tucker')"
