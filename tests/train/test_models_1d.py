"""1-D models for signals (MNIST-1D): sizes, shapes, and factorization of their Linear and Conv1d layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tdecomp import collapse_model, factorize_model, models
from tdecomp.layers import DenseSpec
from tests.helpers import FAMILIES


def conv1d_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv1d) for m in model.modules())


@pytest.mark.parametrize("name,kwargs,params", [
    # cnn1d: convs 1·64·3 + 64·128·3 + 128·128·3 + 128·256·3 + 256·256·3, BN 2·(64+128+128+256+256), Linear 256·10+10
    ("cnn1d", {}, 192 + 24_576 + 49_152 + 98_304 + 196_608 + 1_664 + 2_570),
    ("cnn1d", {"width": 0.5}, 96 + 6_144 + 12_288 + 24_576 + 49_152 + 832 + 1_290),
    ("resnet1d", {}, 439_626),
    ("mlp", {"length": 40}, 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10),
])
def test_sizes_and_output_shapes(name, kwargs, params):
    model = models.create(name, num_classes=10, in_channels=1, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)


@pytest.mark.parametrize("name", ["cnn1d", "resnet1d"])
def test_models_accept_the_mnist1d_bundle_kwargs(name):
    model = models.create(name, num_classes=10, in_channels=1, length=40)
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)


@pytest.mark.parametrize("family", FAMILIES)
def test_linear_layers_factorize(family):
    torch.manual_seed(0)
    mlp = models.create("mlp", length=40, hidden=64)
    factorize_model(mlp, family, 0.3, progress=False)  # default skip: the classifier stays dense
    assert sum(p.numel() for p in mlp.parameters()) < 40 * 64 + 64 * 64 + 64 * 10 + 138
    x = torch.randn(4, 1, 40)
    assert torch.allclose(collapse_model(mlp)(x), mlp(x), atol=1e-4)
    cnn = models.create("cnn1d", width=0.25).eval()
    factorize_model(cnn, family, 2, targets=["linear"], skip=(), progress=False)  # the classifier only, rank 2
    assert not isinstance(cnn.classifier, nn.Linear) and conv1d_count(cnn) == 5
    x = torch.randn(4, 1, 40)
    assert torch.allclose(collapse_model(cnn)(x), cnn(x), atol=1e-4)


def conv1d_supported() -> bool:
    try:
        DenseSpec.from_module(nn.Conv1d(4, 4, 3))
    except (TypeError, ValueError, NotImplementedError):
        return False
    return True


@pytest.mark.skipif(not conv1d_supported(), reason="DenseSpec does not describe nn.Conv1d yet")
@pytest.mark.parametrize("name", ["cnn1d", "resnet1d"])
@pytest.mark.parametrize("family", FAMILIES)
def test_conv1d_layers_factorize(name, family):
    """Every Conv1d but the first is replaced (the default skip keeps the first conv and the classifier),
    and the collapsed model computes what the factorized one does."""
    torch.manual_seed(0)
    model = models.create(name, width=0.25).eval()
    convs = conv1d_count(model)
    factorize_model(model, family, 0.2, progress=False)
    assert conv1d_count(model) == 1 and isinstance(model.classifier, nn.Linear)
    x = torch.randn(4, 1, 40)
    collapsed = collapse_model(model)
    assert conv1d_count(collapsed) == convs
    assert torch.allclose(collapsed(x), model(x), atol=1e-4)
