"""summary.json provenance: final train metrics, code and library versions, device, and the decay
integral λ·Σ_t η_t, checked against git, the libraries themselves and the schedule's formula."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorly
import tltorch
import torch

import tdecomp
from tdecomp import models
from tdecomp.config import load_config
from tdecomp.train import Callback, Trainer, train
from tdecomp.train import provenance as prov
from tdecomp.train.checkpoint import LAST

TINY = dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=256, batch_size=64, lr=0.05,
            progress=False, device="cpu")
LR, GAMMA, WD, FD = 0.05, 0.1, 5e-3, 2e-3
REPO = Path(tdecomp.__file__).resolve().parents[1]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_every_provenance_field_of_a_real_run(tmp_path):
    out = tmp_path / "run"
    summary = train(load_config(None, {**TINY, "epochs": 1, "family": "lowrank", "rank": 0.3, "reg": "fd",
                                       "fd_coef": FD, "val_fraction": 0.2, "out": str(out)}))
    assert json.loads((out / "summary.json").read_text()) == summary
    (last,) = records(out)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
        assert summary[key] == last[key] and np.isfinite(summary[key])
    assert (summary["best_val_acc"], summary["best_val_epoch"]) == (last["val_acc"], 1)
    assert "best_test_acc" not in summary  # nothing is selected on the test set

    assert summary["code"]["version"] == tdecomp.__version__ == importlib.metadata.version("tdecomp")
    if (REPO / ".git").exists():  # an editable install from this checkout
        assert summary["code"]["git_commit"] == git("rev-parse", "HEAD")
        assert summary["code"]["git_dirty"] == bool(git("status", "--porcelain", "--untracked-files=no"))
    assert summary["versions"] == {"python": platform.python_version(), "torch": torch.__version__,
                                   "tensorly": tensorly.__version__, "tensorly-torch": tltorch.__version__,
                                   "numpy": np.__version__}
    assert (summary["device"], summary["threads"], summary["world_size"]) == ("cpu", torch.get_num_threads(), 1)
    # 1 epoch of 4 steps at lr 0.05: milestones 0.5, 0.75 of 4 steps → steps 2, 3 at 0.1×, 0.01×
    assert summary["decay_integral"] == pytest.approx(FD * LR * (1 + 1 + GAMMA + GAMMA**2), rel=1e-12)
    assert last["decay_integral"] == summary["decay_integral"]


def test_a_run_without_validation_reports_no_validation_fields(tmp_path):
    summary = train(load_config(None, {**TINY, "epochs": 1, "out": str(tmp_path / "run")}))
    assert not [k for k in summary if k.startswith(("val_", "best_"))]
    assert {"train_loss", "train_acc", "test_acc", "decay_integral", "code", "versions"} <= set(summary)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``provpkg`` (version 1.2.3) in ``tmp_path/src`` that provenance reports on."""
    root = tmp_path / "src"
    (root / "provpkg").mkdir(parents=True)
    (root / "provpkg" / "__init__.py").write_text('__version__ = "1.2.3"\n')
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(prov, "PACKAGE", "provpkg")
    prov._code_version.cache_clear()
    yield root
    sys.modules.pop("provpkg", None)
    prov._code_version.cache_clear()


def test_code_version_outside_a_checkout_and_without_git(package, monkeypatch):
    assert prov.code_version() == {"version": "1.2.3", "git_commit": None, "git_dirty": None}
    git("init", "-q", cwd=package)  # a checkout that does not track the package (a venv inside a repo)
    (package / "other.txt").write_text("x\n")
    git("add", "other.txt", cwd=package)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "other", cwd=package)
    prov._code_version.cache_clear()
    assert prov.code_version()["git_commit"] is None
    monkeypatch.setenv("PATH", "")  # git missing
    prov._code_version.cache_clear()
    assert prov.code_version() == {"version": "1.2.3", "git_commit": None, "git_dirty": None}


def test_code_version_of_a_checkout_names_its_commit_and_dirty_state(package):
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    git("init", "-q", cwd=package)
    git("add", "provpkg/__init__.py", cwd=package)
    git(*ident, "commit", "-q", "-m", "first", cwd=package)
    (package / "notes.txt").write_text("untracked files do not count\n")
    assert prov.code_version() == {"version": "1.2.3", "git_commit": git("rev-parse", "HEAD", cwd=package),
                                   "git_dirty": False}
    (package / "provpkg" / "__init__.py").write_text('__version__ = "1.2.3"\nX = 1\n')
    prov._code_version.cache_clear()
    assert prov.code_version()["git_dirty"] is True


def expected_lr_sums(total: int, epoch_steps: int, milestones: list[float], warmup: int = 0) -> list[float]:
    """Σ_t η_t at each epoch end, η_t = lr·(t+1)/warmup during warm-up, else lr·γ^#{milestones passed}
    with milestone m at step round(m·total) (the step schedule, written out here)."""
    bounds = [round(m * total) for m in milestones]
    lrs = [LR * ((t + 1) / warmup if t < warmup else GAMMA ** sum(t >= b for b in bounds)) for t in range(total)]
    ends = [*range(epoch_steps, total, epoch_steps), total]
    return [sum(lrs[:end]) for end in ends]


def decay_strength(reg: str, family: str, trainer: Trainer) -> float:
    """λ by hand: FD coefficient (fd), weight decay (wd, dense), weight decay × parameter ratio (crs)."""
    if family == "dense":
        return WD
    dense = sum(p.numel() for p in models.create("cnn", width=0.5, num_classes=10, in_channels=1).parameters())
    ratio = sum(p.numel() for p in trainer.model.parameters()) / dense
    return {"fd": FD, "wd": WD, "crs": WD * ratio, "none": 0.0}[reg]


@pytest.mark.parametrize("max_steps,warmup", [(0, 0), (10, 2)])
@pytest.mark.parametrize(("reg", "family"), [("fd", "lowrank"), ("wd", "lowrank"), ("crs", "lowrank"),
                                             ("none", "lowrank"), ("fd", "dense")])
def test_decay_integral_is_the_strength_times_the_summed_schedule(tmp_path, reg, family, max_steps, warmup):
    """256 examples at batch 64: 4 steps per epoch; 4 epochs = 16 steps, or 10 steps (3 epochs, the last cut)."""
    milestones = [0.3, 0.6]
    cfg = load_config(None, {**TINY, "epochs": 4, "max_steps": max_steps, "warmup_steps": warmup,
                             "milestones": milestones, "family": family, "rank": 0.3, "reg": reg,
                             "weight_decay": WD, "fd_coef": FD, "out": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    summary = trainer.fit()
    sums = expected_lr_sums(max_steps or 16, 4, milestones, warmup)
    strength = decay_strength(reg, family, trainer)
    assert [r["decay_integral"] for r in records(tmp_path / "run")] == pytest.approx(
        [strength * s for s in sums], rel=1e-12, abs=0)
    assert summary["decay_integral"] == pytest.approx(strength * sums[-1], rel=1e-12, abs=0)


class Interrupt(Callback):
    def on_epoch_end(self, trainer, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt


def test_decay_integral_continues_exactly_across_a_resume(tmp_path):
    settings = {**TINY, "epochs": 3, "family": "lowrank", "rank": 0.3, "reg": "wd", "weight_decay": WD}
    whole = train(load_config(None, {**settings, "out": str(tmp_path / "whole")}))
    with pytest.raises(KeyboardInterrupt):
        Trainer(load_config(None, {**settings, "out": str(tmp_path / "split")}), [Interrupt()]).fit()
    split = train(load_config(None, {**settings, "out": str(tmp_path / "split"), "resume": True}))
    assert split["decay_integral"] == whole["decay_integral"] > 0
    assert "earlier_code" not in split  # the same code ran both parts


def test_a_checkpoint_without_the_lr_sum_resumes_with_an_unknown_decay_integral(tmp_path):
    out = tmp_path / "run"
    settings = {**TINY, "family": "lowrank", "rank": 0.3, "reg": "wd", "out": str(out)}
    train(load_config(None, {**settings, "epochs": 1}))
    state = torch.load(out / LAST, weights_only=True)
    del state["lr_sum"], state["codes"]  # as written before they were kept
    torch.save(state, out / LAST)
    summary = train(load_config(None, {**settings, "epochs": 2, "resume": True}))
    assert summary["decay_integral"] is None and records(out)[-1]["decay_integral"] is None
