"""``max_steps``: training stops after exactly that many optimizer steps, mid-epoch if needed
(fairseq ``--max-update``), with schedules, resume and the finished-run check following."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tdecomp.config import load_config
from tdecomp.train import Callback, Trainer, train
from tdecomp.train.checkpoint import load_checkpoint
from tdecomp.train.runs import is_complete

from .test_trainer import Interrupt, _strip_time, config, records

STEPS = 8  # digits subset=384, batch_size=64: 6 steps per epoch, so step 8 is mid-epoch 2
LIMIT = dict(max_steps=STEPS, epochs=5)


class OptimizerSteps(Callback):
    """Counts optimizer steps and the lr each one used, independently of ``global_step``."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def test_max_steps_stops_mid_epoch_and_finishes_the_run(tmp_path):
    cfg = config(tmp_path, **LIMIT)
    counter = OptimizerSteps()
    trainer = Trainer(cfg, callbacks=[counter])
    assert STEPS % trainer.steps_per_epoch  # the limit falls inside an epoch
    summary = trainer.fit()
    assert len(counter.lrs) == trainer.global_step == STEPS
    out = tmp_path / "run"
    assert [(r["epoch"], r["step"]) for r in records(out)] == [(1, 6), (2, STEPS)]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (summary["epochs"], summary["steps"]) == (2, STEPS) and 0 <= summary["test_acc"] <= 1
    assert load_checkpoint(out)["global_step"] == STEPS
    assert is_complete(cfg)


def test_epochs_win_when_they_come_first(tmp_path):
    counter = OptimizerSteps()
    trainer = Trainer(config(tmp_path, max_steps=1000, epochs=1), callbacks=[counter])
    assert trainer.fit()["steps"] == len(counter.lrs) == trainer.steps_per_epoch


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_schedules_span_the_steps_actually_taken(tmp_path, schedule):
    counter = OptimizerSteps()
    train(config(tmp_path, schedule=schedule, milestones=[0.5, 0.75], gamma=0.1, **LIMIT), callbacks=[counter])
    lr = 0.05
    if schedule == "step":  # ×0.1 at steps 0.5·8 = 4 and 0.75·8 = 6 (0-based), not at 0.5·30, 0.75·30
        expected = [lr] * 4 + [lr * 0.1] * 2 + [lr * 0.01] * 2
    else:  # ½(1 + cos(π n / 8)) for the n-th step
        expected = [lr * 0.5 * (1 + math.cos(math.pi * n / STEPS)) for n in range(STEPS)]
    assert counter.lrs == pytest.approx(expected, rel=1e-6)


def test_resume_reaches_exactly_max_steps(tmp_path):
    train(config(tmp_path, "whole", **LIMIT))
    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tmp_path, "split", **LIMIT), callbacks=[Interrupt(at=1)]).fit()
    counter = OptimizerSteps()
    trainer = Trainer(config(tmp_path, "split", resume=True, **LIMIT), callbacks=[counter])
    trainer.fit()
    assert trainer.global_step == STEPS and len(counter.lrs) == STEPS - trainer.steps_per_epoch
    assert _strip_time(records(tmp_path / "split")) == _strip_time(records(tmp_path / "whole"))
    whole, split = (load_checkpoint(tmp_path / n)["model"] for n in ("whole", "split"))
    for key in whole:
        assert torch.equal(whole[key], split[key]), key


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_bad_max_steps_names_the_value_and_the_fix(bad):
    with pytest.raises(ValueError, match=rf"max_steps must be an int ≥ 0 \(0: train for epochs\), got {bad!r}"):
        load_config(None, {"max_steps": bad})
