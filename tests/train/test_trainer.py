"""The training engine end to end on digits: progress, resume, DDP, failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdecomp.config import load_config
from tdecomp.train import Callback, Trainer, TrainingDiverged, train
from tdecomp.train.checkpoint import CheckpointError, load_checkpoint

FAST = dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=384, batch_size=64,
            epochs=3, lr=0.05, progress=False)


def config(tmp_path: Path, name: str = "run", **overrides):
    return load_config(None, {**FAST, "out": str(tmp_path / name), **overrides})


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family,init,reg", [
    ("dense", "spectral", "wd"), ("lowrank", "spectral", "fd"), ("cp", "random", "wd"),
    ("tucker", "spectral", "fd"), ("tt", "random", "none"),
])
def test_training_loss_decreases_and_files_are_written(tmp_path, family, init, reg):
    cfg = config(tmp_path, family=family, init=init, reg=reg, rank=0.3)
    summary = train(cfg)
    recs = records(tmp_path / "run")
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]
    assert set(recs[0]) >= {"epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "time_s"}
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved == summary and 0 <= saved["test_acc"] <= 1
    assert saved["params"] <= saved["dense_params"] and saved["param_ratio"] == pytest.approx(
        saved["params"] / saved["dense_params"])
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "last.pt").exists()


class Interrupt(Callback):
    """Simulates a crash right after epoch ``at`` was checkpointed."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.at:
            raise KeyboardInterrupt


def _strip_time(recs):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in recs]


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    settings = dict(family="lowrank", rank=0.3, reg="fd", init="spectral")
    train(config(tmp_path, "whole", **settings))
    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tmp_path, "split", **settings), callbacks=[Interrupt(at=2)]).fit()
    assert len(records(tmp_path / "split")) == 2
    train(config(tmp_path, "split", resume=True, **settings))
    assert _strip_time(records(tmp_path / "split")) == _strip_time(records(tmp_path / "whole"))
    whole, split = (load_checkpoint(tmp_path / n)["model"] for n in ("whole", "split"))
    for key in whole:
        assert torch.equal(whole[key], split[key]), key


class StepCounter(Callback):
    """Stateful callback: counts optimizer steps across a resume."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, trainer, info):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_resume_restores_callback_state_when_the_callback_list_changes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tmp_path), callbacks=[Interrupt(at=1), StepCounter()]).fit()
    counter = StepCounter()
    trainer = Trainer(config(tmp_path, resume=True), callbacks=[counter])
    trainer.fit()
    assert counter.steps == trainer.global_step == 3 * trainer.steps_per_epoch


def test_resume_with_a_different_config_names_the_changed_keys(tmp_path):
    train(config(tmp_path, epochs=1, family="cp", rank=0.3))
    with pytest.raises(ValueError, match=r"family='cp' → 'tucker'.*lr=0.05 → 0.1"):
        train(config(tmp_path, epochs=1, family="tucker", rank=0.3, lr=0.1, resume=True))
    # keys that do not change the run (here: progress, device) may differ
    assert train(config(tmp_path, epochs=1, family="cp", rank=0.3, resume=True, device="cpu", progress=True))


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    train(config(tmp_path, epochs=1))
    with pytest.raises(FileExistsError, match="resume=true"):
        train(config(tmp_path, epochs=1))


def test_corrupt_checkpoint_gives_a_clear_error_and_keeps_the_previous(tmp_path):
    train(config(tmp_path, epochs=2))
    out = tmp_path / "run"
    previous = load_checkpoint(out)  # epoch 2; previous.pt holds epoch 1
    assert previous["epoch"] == 2
    (out / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"copy \S+previous.pt over \S+last.pt and rerun with resume=true"):
        train(config(tmp_path, epochs=3, resume=True))
    assert torch.load(out / "previous.pt", weights_only=True)["epoch"] == 1


class PoisonWeights(Callback):
    def on_step_end(self, trainer, info):
        if info.epoch == 1:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    # detected at the epoch-end sync (log_every=50 > 6 steps per epoch); poisoned after step 7
    with pytest.raises(TrainingDiverged, match=r"loss became nan between steps 7 and 12 \(epoch 2\)"):
        Trainer(config(tmp_path, family="tucker", rank=0.3), callbacks=[PoisonWeights()]).fit()
    state = load_checkpoint(tmp_path / "run")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_matches_the_single_process_global_batch(tmp_path):
    """torchrun with 2 CPU processes, each taking half of every global batch of 64, must train
    the same weights as one process on the full batch (no BN: gradients are plain averages)."""
    args = ["model=mlp", "data=digits", "subset=256", "batch_size=64", "epochs=2", "lr=0.1",
            "family=lowrank", "rank=0.3", "reg=fd", "progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "tdecomp.cli", "train", *args, f"out={single}"],
                   check=True, env=env, capture_output=True)
    ddp = tmp_path / "ddp"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", "-m", "tdecomp.cli", "train", *args, f"out={ddp}"],
                   check=True, env=env, capture_output=True, timeout=300)
    a, b = load_checkpoint(single)["model"], load_checkpoint(ddp)["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert records(single)[-1]["step"] == records(ddp)[-1]["step"] == 8  # 256 / 64 × 2 epochs


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """compile=true compiles the model and the FD term; the run tracks the eager one."""
    settings = dict(family="tucker", rank=0.3, reg="fd", epochs=1)
    eager = train(config(tmp_path, "eager", **settings))
    compiled = train(config(tmp_path, "compiled", compile=True, **settings))
    assert compiled["test_loss"] == pytest.approx(eager["test_loss"], rel=1e-3)
