"""``data=fake``: deterministic device tensors of any shape, batched without workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from tdecomp import data
from tdecomp.config import load_config
from tdecomp.train import train


def test_fake_data_is_deterministic_and_shaped():
    a = data.create("fake", seed=3, shape=[2, 5, 7], num_classes=4, num_samples=64, device="cpu")
    b = data.create("fake", seed=3, shape=[2, 5, 7], num_classes=4, num_samples=64, device="cpu")
    c = data.create("fake", seed=4, shape=[2, 5, 7], num_classes=4, num_samples=64, device="cpu")
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert not torch.equal(a.train.inputs[: len(a.test)], a.test.inputs)  # the splits differ
    assert a.train.inputs.shape == (64, 2, 5, 7) and set(a.train.labels.tolist()) <= set(range(4))
    assert a.model_kwargs == {"num_classes": 4, "in_channels": 2}
    x, y = list(DataLoader(a.train, batch_size=16, collate_fn=a.collate_fn))[1]  # one gather per batch
    assert torch.equal(x, a.train.inputs[16:32]) and torch.equal(y, a.train.labels[16:32])


def test_bad_fake_options_name_the_key():
    with pytest.raises(ValueError, match="data_kwargs.shape"):
        data.create("fake", shape=[3, 0, 4])
    with pytest.raises(ValueError, match="data_kwargs.num_samples"):
        data.create("fake", num_samples=0)


def test_training_on_fake_data(tmp_path):
    cfg = load_config(None, dict(model="cnn", model_kwargs={"width": 0.5}, data="fake", epochs=1,
                                 data_kwargs={"shape": [1, 8, 8], "num_samples": 64, "test_samples": 32},
                                 batch_size=16, progress=False, out=str(tmp_path / "run")))
    summary = train(cfg)
    assert summary["epochs"] == 1 and 0 <= summary["test_acc"] <= 1
