"""The training step never waits for the device: host syncs happen only every ``log_every``
steps and at the epoch end, so their count does not grow with the number of steps."""

from __future__ import annotations

import sys

import pytest
import torch

from tdecomp.config import load_config
from tdecomp.train import Trainer

SYNCS = ("item", "__float__", "__int__", "__bool__", "tolist")


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    """Tucker with FD (the task, the FD term and the optimizer all run), 16 examples per step."""
    cfg = load_config(None, dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=96,
                                 batch_size=16, epochs=1, progress=False, family="tucker", rank=0.3,
                                 reg="fd", out="unused"))
    return Trainer(cfg)


def _count_syncs(monkeypatch, trainer: Trainer, steps: int, log_every: int) -> int:
    batches = list(trainer.train_loader)[:steps]
    monkeypatch.setattr(trainer, "train_loader", batches)
    monkeypatch.setattr(trainer.config, "log_every", log_every)
    calls = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            # the DataLoader draws its shuffling indices on the host: not a device sync
            if "torch/utils/data" not in sys._getframe(1).f_code.co_filename:
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    trainer._train_epoch(0)
    monkeypatch.undo()
    return len(calls)


def test_no_host_sync_inside_the_step(monkeypatch, trainer):
    # one loss sync + one tolist of the epoch counts, however many steps
    assert _count_syncs(monkeypatch, trainer, 1, 50) == _count_syncs(monkeypatch, trainer, 5, 50) == 2


def test_syncs_happen_at_the_log_interval(monkeypatch, trainer):
    # 6 steps, log_every=2: loss syncs after steps 2, 4, 6 (none left for the epoch end) + the counts
    trainer.global_step = 0
    assert _count_syncs(monkeypatch, trainer, 6, 2) == 4
