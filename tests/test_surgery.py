"""factorize_model: budgets, skip rules, collapse; against brute-force parameter counts."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tdecomp
from tests.helpers import FAMILIES, TinyCNN1d, TinyResNet, TinyTransformerMLP, assert_rel_close


def _dense_params(model: nn.Module, names: list[str]) -> int:
    return sum(p.numel() for n in names for p in model.get_submodule(n).parameters())


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("make", [TinyResNet, TinyTransformerMLP], ids=["resnet", "mlp"])
def test_factorize_model_hits_the_budget(make, family, ratio):
    model = make()
    names = [n for n, _ in tdecomp.eligible_layers(model)]
    dense_total = _dense_params(model, names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missed budget warns; here that is a failure
        tdecomp.factorize_model(model, family, ratio, progress=False)
    factorized_total = _dense_params(model, names)  # same names now hold factorized layers
    assert factorized_total / dense_total == pytest.approx(ratio, rel=0.02)
    assert tdecomp.summarize(model).ratio == pytest.approx(factorized_total / dense_total)
    assert all(isinstance(model.get_submodule(n), tdecomp.FactorizedLayer) for n in names)


def test_default_skip_keeps_first_conv_and_classifier_dense():
    model = tdecomp.factorize_model(TinyResNet(), "tucker", 0.3, progress=False)
    assert type(model.stem) is nn.Conv2d and type(model.fc) is nn.Linear
    assert isinstance(model.layers[0].conv1, tdecomp.FactorizedLayer)
    assert isinstance(model.layers[1].shortcut[0], tdecomp.FactorizedLayer)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_skip_by_names_and_predicate_and_unknown_name():
    model = tdecomp.factorize_model(TinyTransformerMLP(), "lowrank", 8, skip=(), progress=False)
    assert isinstance(model.head, tdecomp.FactorizedLayer)
    model = tdecomp.factorize_model(
        TinyTransformerMLP(), "lowrank", 8, skip=lambda name, m: m.out_features == 64, progress=False
    )
    assert type(model.blocks[0][3]) is nn.Linear and isinstance(model.blocks[0][1], tdecomp.FactorizedLayer)
    with pytest.raises(ValueError, match="do not exist.*blocks.9"):
        tdecomp.factorize_model(TinyTransformerMLP(), "cp", 4, skip=["blocks.9"])


def test_grouped_convs_and_attention_internals_are_left_alone():
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3),
    )
    tdecomp.factorize_model(model, "cp", 4, skip=(), progress=False)
    assert type(model[0]) is nn.Conv2d and isinstance(model[1], tdecomp.FactorizedLayer)
    attn = nn.Sequential(nn.MultiheadAttention(16, 2), nn.Linear(16, 16))
    assert [n for n, _ in tdecomp.eligible_layers(attn, skip=())] == ["1"]


@pytest.mark.parametrize("family", FAMILIES)
def test_collapse_model_gives_an_identical_dense_model(family):
    model = TinyResNet().double().eval()
    tdecomp.factorize_model(model, family, 0.3, progress=False)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    before = model(x)
    tdecomp.collapse_model(model)
    assert not any(isinstance(m, tdecomp.FactorizedLayer) for m in model.modules())
    assert_rel_close(model(x), before, 1e-10, "collapsed model")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_1d_cnn_factorizes_and_collapses_like_a_2d_one(family):
    model = TinyCNN1d().double().eval()
    assert [n for n, _ in tdecomp.eligible_layers(model)] == ["features.2", "features.5", "features.7"]
    assert [n for n, _ in tdecomp.eligible_layers(model, targets=("linear",))] == []
    tdecomp.factorize_model(model, family, 0.3, progress=False)
    assert type(model.features[0]) is nn.Conv1d and type(model.fc) is nn.Linear
    x = torch.randn(3, 1, 20, dtype=torch.float64)
    before = model(x)
    layer = model.features[5]
    assert_rel_close(layer.frobenius_sq(), layer.reconstruct().square().sum(), 1e-10, "‖W‖²")
    tdecomp.collapse_model(model)
    assert [type(model.features[i]) for i in (2, 5, 7)] == [nn.Conv1d] * 3
    assert model.features[5].padding_mode == "circular"
    assert_rel_close(model(x), before, 1e-10, "collapsed 1-D model")


def test_spectral_model_at_full_budget_keeps_the_function():
    """Tucker/TT at full rank are exact, so the factorized model computes the same function."""
    model = TinyResNet().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    before = model(x)
    with pytest.warns(UserWarning):
        tdecomp.factorize_model(model, "tt", 10_000, progress=False)
    assert_rel_close(model(x), before, 1e-9, "full-rank TT model")
