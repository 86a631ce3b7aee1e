"""Two training runs with the same seed take the same numerical path and record it (issues 21.8,
22): on the CPU (the cost model) and on the measured path (CUDA's, driven here by an injected
timer); the choice is in summary.json and in the checkpoint, and a resumed run keeps it."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.module import _EXTRA_STATE_KEY_SUFFIX

from tdecomp.layers.execution import CHOSEN
from tdecomp.train import Callback, Trainer, train
from tdecomp.train.checkpoint import load_checkpoint
from tests.helpers import prefer_reconstructed

from .test_trainer import Interrupt, _strip_time, config, records

SETTINGS = dict(family="tucker", rank=0.3, reg="fd", epochs=2)
LAYERS = {"features.3", "features.6", "features.9", "features.12"}  # the cnn's factorized convs


def _checkpointed(out) -> dict[str, str | None]:
    """The choices the checkpoint's model state holds (the layers' extra state)."""
    state = load_checkpoint(out)["model"]
    suffix = "." + _EXTRA_STATE_KEY_SUFFIX
    return {k.removesuffix(suffix): None if int(v) < 0 else CHOSEN[int(v)] for k, v in state.items()
            if k.endswith(suffix)}


def test_two_cpu_runs_take_the_same_path_and_record_it(tmp_path):
    first, second = (train(config(tmp_path, name, **SETTINGS)) for name in ("first", "second"))
    assert set(first["implementations"]) == LAYERS
    assert first["implementations"] == second["implementations"] == _checkpointed(tmp_path / "first")
    assert set(first["implementations"].values()) == {"factorized"}  # the cost model's choice here
    assert _strip_time(records(tmp_path / "first")) == _strip_time(records(tmp_path / "second"))


class ChoicesAtStart(Callback):
    def on_train_start(self, state):
        self.chosen = {n: m.chosen_implementation for n, m in state.model.named_modules() if n in LAYERS}


@pytest.fixture
def measured(monkeypatch) -> list[str]:
    """The measured path on the CPU, timing 'reconstructed' as faster (the cost model says 'factorized')."""
    return prefer_reconstructed(monkeypatch)


def test_measured_runs_take_the_same_path_record_it_and_keep_it_on_resume(tmp_path, measured):
    first = train(config(tmp_path, "first", **SETTINGS))
    assert len(measured) == 2 * len(LAYERS)  # each layer timed once (both paths), not per batch shape
    assert first["implementations"] == dict.fromkeys(LAYERS, "reconstructed") == _checkpointed(tmp_path / "first")
    second = train(config(tmp_path, "second", **SETTINGS))
    assert second["implementations"] == first["implementations"]
    assert _strip_time(records(tmp_path / "first")) == _strip_time(records(tmp_path / "second"))

    measured.clear()
    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tmp_path, "split", **SETTINGS), callbacks=[Interrupt(at=1)]).fit()
    assert len(measured) == 2 * len(LAYERS)
    at_start = ChoicesAtStart()
    summary = Trainer(config(tmp_path, "split", resume=True, **SETTINGS), callbacks=[at_start]).fit()
    assert at_start.chosen == dict.fromkeys(LAYERS, "reconstructed")  # restored from the checkpoint, before any forward
    assert len(measured) == 2 * len(LAYERS)  # nothing measured again after the resume
    assert summary["implementations"] == first["implementations"]
    assert _strip_time(records(tmp_path / "split")) == _strip_time(records(tmp_path / "first"))
    whole, split = (load_checkpoint(tmp_path / n)["model"] for n in ("first", "split"))
    assert all(torch.equal(whole[k], split[k]) for k in whole)
