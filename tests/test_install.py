"""Installed as users install it (issue 21.10): a regular, non-editable install into a fresh target
outside the checkout, run from outside the checkout, finds its packaged configs and trains.

The checkout's analysis/ and experiments/ install inside the package (pyproject's package-dir), as
``tdecomp.analysis`` and ``tdecomp.experiments``; nothing named ``analysis`` or ``experiments``
exists at the top level there, so code that imports or asks ``importlib.resources`` for them by
their checkout names fails here (the tests run from the checkout never see it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tdecomp

ROOT = Path(__file__).resolve().parents[1]
# what the package is built from (pyproject.toml's packages, package-dir and readme)
SOURCES = ("pyproject.toml", "README.md", "tdecomp", "analysis", "experiments")


def _pip_install(source: Path, target: Path) -> subprocess.CompletedProcess:
    """``pip install --no-deps --target target source``: in pip's isolated build environment (the
    build backend from the package index, as for any user), else — where that cannot be fetched —
    with this environment's setuptools and wheel."""
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode and importlib.util.find_spec("wheel") is not None:
        done = subprocess.run([*command, "--no-build-isolation"], capture_output=True, text=True, timeout=600)
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A non-editable install of this checkout, built from a copy (the build writes build/ and
    egg-info next to its sources; the checkout stays as it is)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(path, source / name)
    target = root / "target"
    done = _pip_install(source, target)
    assert done.returncode == 0, f"pip install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return target


def _python(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` seeing the installed package first (PYTHONPATH=target), from ``cwd``."""
    env = dict(os.environ, PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_the_installed_package_has_its_subpackages_inside(installed, tmp_path):
    assert not (installed / "analysis").exists() and not (installed / "experiments").exists()
    code = ("import tdecomp, tdecomp.analysis, tdecomp.experiments; "
            "print(tdecomp.__file__, tdecomp.analysis.__file__, tdecomp.experiments.__file__)")
    run = _python(installed, tmp_path, "-c", code)
    assert run.returncode == 0, run.stderr
    assert all(Path(f).is_relative_to(installed / "tdecomp") for f in run.stdout.split())


def test_the_installed_cli_runs_outside_the_checkout(installed, tmp_path):
    version = _python(installed, tmp_path, "-m", "tdecomp.cli", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"tdecomp {tdecomp.__version__}", version.stderr

    help_text = _python(installed, tmp_path, "-m", "tdecomp.cli", "train", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "demo_digits" in help_text.stdout  # the packaged configs are found

    sweep = _python(installed, tmp_path, "-m", "tdecomp.cli", "sweep")  # no config: names the packaged ones
    assert sweep.returncode == 2 and "Traceback" not in sweep.stderr, sweep.stderr
    assert "a sweep needs a config first" in sweep.stderr and "demo_digits" in sweep.stderr

    out = tmp_path / "run"
    train = _python(installed, tmp_path, "-m", "tdecomp.cli", "train", "digits", "epochs=1", "subset=128",
                    "progress=false", "device=cpu", f"out={out}")
    assert train.returncode == 0, train.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and 0 <= summary["test_acc"] <= 1
    assert summary["code"] == {"version": tdecomp.__version__, "git_commit": None, "git_dirty": None}  # no checkout
