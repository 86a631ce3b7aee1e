"""MNIST-1D: generated offline (no socket is opened), deterministic in its generation seed, cached as .npz."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest
import torch

from tdecomp import data
from tdecomp.data import mnist1d

SMALL = 100  # signals: 80 train / 20 test, generated in a fraction of a second


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("MNIST-1D must not touch the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_shapes_labels_and_model_kwargs(tmp_path, no_network):
    bundle = data.create("mnist1d", root=str(tmp_path), num_samples=SMALL, subset=50)
    assert len(bundle.train) == 50 and len(bundle.test) == 20
    x, y = bundle.train[0]
    assert x.shape == (1, 40) and x.dtype == torch.float32 and y.dtype == torch.long
    labels = torch.stack([bundle.test[i][1] for i in range(20)])
    assert labels.min() >= 0 and labels.max() <= 9 and len(labels.unique()) > 5
    assert bundle.model_kwargs == {"num_classes": 10, "in_channels": 1, "length": 40}


def test_generation_is_deterministic_and_leaves_global_rngs_alone(tmp_path, no_network):
    random.seed(7)
    np.random.seed(7)
    expected = random.random(), np.random.rand()
    random.seed(7)
    np.random.seed(7)
    first = mnist1d.load(tmp_path / "a", SMALL)
    assert (random.random(), np.random.rand()) == expected
    again, other = mnist1d.load(tmp_path / "b", SMALL), mnist1d.load(tmp_path / "c", SMALL, generation_seed=1)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["x"], other["x"])
    train_a = data.create("mnist1d", root=str(tmp_path / "a"), num_samples=SMALL, seed=0).train
    train_b = data.create("mnist1d", root=str(tmp_path / "a"), num_samples=SMALL, seed=3).train
    assert torch.equal(train_a.tensors[0], train_b.tensors[0])  # the training seed does not redraw the data


def test_the_cache_is_read_instead_of_regenerating(tmp_path, monkeypatch, no_network):
    first = mnist1d.load(tmp_path, SMALL)
    assert mnist1d.cache_path(tmp_path, SMALL, mnist1d.GENERATION_SEED).is_file()
    monkeypatch.setattr(mnist1d, "generate", lambda *a: pytest.fail("regenerated a cached draw"))
    cached = mnist1d.load(tmp_path, SMALL)
    assert all(np.array_equal(first[k], cached[k]) for k in first)


def test_bad_num_samples_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="num_samples must be an int ≥ 50"):
        data.create("mnist1d", root=str(tmp_path), num_samples=10)
