"""The trainer on a user's own objects (issue 21.10): an ``nn.Module`` of one's own and
``TensorDataset`` loaders get every feature the registry path has — factorization, FD with
rebalancing, the dynamics tracker, checkpoints, resume, summary and provenance — through
``tdecomp.fit`` / ``Trainer.from_objects``; callbacks see only the narrow training state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tdecomp
from tdecomp.config import TrainConfig
from tdecomp.train import Callback, Trainer
from tdecomp.train.callbacks import TrainingState

from .test_trainer import _strip_time, records

SETTINGS = dict(family="tucker", rank=0.3, reg="fd", track_every=3, epochs=3, lr=0.05, progress=False,
                device="cpu", seed=5)


class SmallNet(nn.Module):
    """A user's model: nothing in the registry knows it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(2, 16, 3, padding=1), nn.ReLU(), nn.Conv1d(16, 16, 3, padding=1),
                                      nn.ReLU(), nn.Conv1d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(2))


def _objects(seed: int = 0) -> tuple[nn.Module, DataLoader, DataLoader, DataLoader]:
    torch.manual_seed(seed)
    x, y = torch.randn(160, 2, 12), torch.randint(0, 3, (160,))
    x[:, 0] += y[:, None].float()  # learnable
    train = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(x[96:128], y[96:128]), batch_size=32)
    test = DataLoader(TensorDataset(x[128:], y[128:]), batch_size=32)
    return SmallNet(), train, val, test


class Interrupt(Callback):
    def on_epoch_end(self, state, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt


class SeesTheState(Callback):
    """Records what every hook was handed."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def on_before_optimizer_step(self, state):
        self.seen.append(state)
        assert state.model.head.weight.grad is not None and state.grads_scaled is False and state.loss_scale() == 1.0

    def on_step_end(self, state, info):
        assert state.step == info.step and state.lr == info.lr


def test_own_model_and_loaders_train_with_fd_tracking_resume_and_summary(tmp_path):
    whole = tdecomp.fit(*_objects()[:2], _objects()[3], _objects()[2], out=str(tmp_path / "whole"), **SETTINGS)

    model, train, val, test = _objects()
    seer = SeesTheState()
    config = TrainConfig.from_dict({**SETTINGS, "out": str(tmp_path / "split")})
    trainer = Trainer.from_objects(model, train, test, val, config=config, callbacks=[Interrupt(), seer])
    assert trainer.model is model and trainer.reg_policy.applies_fd and trainer.reg_policy.rebalances
    assert len(trainer.callbacks) == 3  # ours, and the tracker track_every asked for
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert seer.seen and all(type(s) is TrainingState for s in seer.seen)  # not the trainer
    split = tdecomp.fit(*_objects()[:2], _objects()[3], _objects()[2], out=str(tmp_path / "split"), resume=True,
                        **SETTINGS)

    out = tmp_path / "split"
    assert _strip_time(records(out)) == _strip_time(records(tmp_path / "whole"))  # resumed = uninterrupted
    assert (out / "dynamics.jsonl").read_text() == (tmp_path / "whole" / "dynamics.jsonl").read_text()
    dynamics = [json.loads(line) for line in (out / "dynamics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in dynamics] == list(range(0, 19, 3))  # 6 steps per epoch, every 3
    assert {e["family"] for e in dynamics[-1]["layers"].values()} == {"tucker", "dense"}
    assert json.loads((out / "summary.json").read_text()) == split
    for key in ("test_acc", "val_acc", "best_val_acc", "train_loss", "params", "dense_params", "param_ratio",
                "flops", "flop_ratio", "decay_integral", "code", "versions", "device", "world_size"):
        assert key in split, key
    assert split["decay_integral"] > 0 and split["param_ratio"] < 1
    assert (split["model"], split["data"], split["family"], split["reg"]) == ("SmallNet", "TensorDataset", "tucker",
                                                                              "fd")
    chosen = split["implementations"]
    assert set(chosen) == {"features.2", "features.4"} and set(chosen.values()) <= {"factorized", "reconstructed"}
    assert split["dense_params"] == sum(p.numel() for p in SmallNet().parameters())
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["model"], saved["data"], saved["track_every"]) == (None, None, 3)  # not a registry model
    assert {k: v for k, v in split.items() if k != "time_s"} == {k: v for k, v in whole.items() if k != "time_s"}


def test_an_already_factorized_model_counts_its_dense_size():
    model, train, _, test = _objects()
    dense = sum(p.numel() for p in model.parameters())
    tdecomp.factorize_model(model, "lowrank", 4, progress=False)
    trainer = Trainer.from_objects(model, train, test, config=TrainConfig(device="cpu", out="unused"))
    assert trainer.dense_params == dense and trainer.param_ratio == pytest.approx(
        sum(p.numel() for p in model.parameters()) / dense)


def test_keys_that_build_registry_objects_are_refused_with_objects():
    model, train, _, test = _objects()
    with pytest.raises(ValueError, match=r"subset=10, batch_size=32 build the registry's data and model"):
        tdecomp.fit(model, train, test, batch_size=32, subset=10)
    with pytest.raises(ValueError, match=r"data='cifar10' build the registry's"):
        Trainer.from_objects(model, train, test, config=TrainConfig(data="cifar10"))
    with pytest.raises(ValueError, match=r"distill=2.0 build the registry's"):
        tdecomp.fit(model, train, test, distill=2.0, init_from="runs/x")


def test_data_aware_factorization_needs_calibration_the_user_draws():
    model, train, _, test = _objects()
    with pytest.raises(ValueError, match=r"init='whitened'.*tdecomp.calibrate"):
        Trainer.from_objects(model, train, test, config=TrainConfig(family="lowrank", init="whitened", out="unused"))


def test_the_registry_path_refuses_null_names(tmp_path):
    with pytest.raises(ValueError, match="give your own objects to tdecomp.fit"):
        Trainer(TrainConfig(model=None, out=str(tmp_path)))


def test_summary_fields_are_added_and_may_not_replace_the_trainers(tmp_path):
    model, train, _, test = _objects()
    trainer = Trainer.from_objects(model, train, test, config=TrainConfig(device="cpu", epochs=1, progress=False,
                                                                           out=str(tmp_path / "a")))
    trainer.summary_fields["note"] = {"source": "mine"}
    summary = trainer.fit()
    assert summary["note"] == {"source": "mine"}
    assert json.loads(Path(tmp_path / "a" / "summary.json").read_text())["note"] == {"source": "mine"}

    model, train, _, test = _objects()
    trainer = Trainer.from_objects(model, train, test, config=TrainConfig(device="cpu", epochs=1, progress=False,
                                                                           out=str(tmp_path / "b")))
    trainer.summary_fields["test_acc"] = 1.0
    with pytest.raises(ValueError, match=r"summary_fields \['test_acc'\] would replace"):
        trainer.fit()
