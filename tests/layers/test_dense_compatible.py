"""Factorized layers are drop-in for the dense module they replace (HANDBOOK A, issue 21 item 1):
the dense module's attributes, a read-only placeholder ``weight``, and old checkpoints that load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdecomp
from tests.helpers import FAMILIES

LINEAR = ("in_features", "out_features")
CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")

DENSE = {
    "linear": lambda: nn.Linear(6, 10),
    "linear-nobias": lambda: nn.Linear(6, 10, bias=False),
    "conv1d": lambda: nn.Conv1d(4, 6, 5, stride=2, padding=3, dilation=2, padding_mode="reflect"),
    "conv2d": lambda: nn.Conv2d(4, 6, (3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1),
                                padding_mode="circular", bias=False),
    "conv2d-same": lambda: nn.Conv2d(4, 6, 3, padding="same"),
    "conv2d-1x1": lambda: nn.Conv2d(4, 6, 1, stride=2),
    "conv3d": lambda: nn.Conv3d(2, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), padding_mode="replicate"),
}


@pytest.mark.parametrize("case", DENSE)
@pytest.mark.parametrize("family", FAMILIES)
def test_the_dense_modules_attributes_are_the_layers(family, case):
    dense = DENSE[case]()
    layer = tdecomp.factorize(dense, family, 0.5, init="random")
    present, absent = (LINEAR, CONV) if isinstance(dense, nn.Linear) else (CONV, LINEAR)
    for name in present:
        assert getattr(layer, name) == getattr(dense, name), (name, getattr(layer, name), getattr(dense, name))
    for name in absent:
        assert not hasattr(dense, name)
        with pytest.raises(AttributeError, match=f"object has no attribute '{name}'"):
            getattr(layer, name)
    if dense.bias is None:
        assert layer.bias is None
    else:
        assert isinstance(layer.bias, nn.Parameter) and torch.equal(layer.bias, dense.bias)


def test_an_embedding_has_the_dense_embeddings_attributes():
    dense = nn.Embedding(20, 6, padding_idx=0)
    layer = tdecomp.factorize(dense, "lowrank", 3, init="random")
    for name in ("num_embeddings", "embedding_dim", "padding_idx"):
        assert getattr(layer, name) == getattr(dense, name)
    assert layer.weight.shape == dense.weight.shape
    for name in (*LINEAR, *CONV):
        assert not hasattr(layer, name)


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_is_a_read_only_placeholder_that_follows_the_module(family, monkeypatch):
    dense = nn.Conv2d(4, 6, 3)
    layer = tdecomp.factorize(dense, family, 0.5, init="random")

    def no_reconstruction(self):
        raise AssertionError("reading weight must not reconstruct W")

    monkeypatch.setattr(type(layer), "reconstruct", no_reconstruction)
    weight = layer.weight
    assert (weight.shape, weight.dtype, weight.device) == (dense.weight.shape, dense.weight.dtype, dense.weight.device)
    assert torch.isnan(weight).all() and weight.stride() == (0,) * weight.ndim  # one NaN, expanded: no memory
    assert weight.untyped_storage().nbytes() == weight.element_size()
    assert layer.to(torch.float64).weight.dtype == torch.float64
    assert layer.half().weight.dtype == torch.float16
    for value in (torch.zeros(dense.weight.shape), nn.Parameter(torch.zeros(dense.weight.shape))):
        with pytest.raises(AttributeError, match="weight is a read-only placeholder"):
            layer.weight = value
    assert all("placeholder" not in key for key in layer.state_dict())


@pytest.mark.parametrize("family", FAMILIES)
def test_a_state_dict_with_the_old_key_names_loads_into_a_new_layer(family):
    """Checkpoints of CP/Tucker/TT layers kept the tltorch tensor under ``weight``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3))
    tdecomp.factorize_model(model, family, 2, skip=(), progress=False)
    saved = model.state_dict()
    has_decomposition = any(".decomposition." in k for k in saved)
    assert has_decomposition == (family in ("cp", "tucker", "tt"))
    old = {k.replace(".decomposition.", ".weight."): v for k, v in saved.items()}
    assert (old != saved) == has_decomposition

    torch.manual_seed(1)
    fresh = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3))
    tdecomp.factorize_model(fresh, family, 2, skip=(), progress=False, init="random")
    x = torch.randn(2, 4, 9, 9)
    assert not torch.equal(fresh(x), model(x))
    fresh.load_state_dict(old)  # strict: every key renamed, none left over
    assert torch.equal(fresh(x), model(x))
