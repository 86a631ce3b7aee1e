"""One implementation choice per layer: ``implementation="auto"`` decides on the first forward (the
cost model on the CPU; measured on CUDA, driven here on the CPU by an injected timer), keeps it as
``chosen_implementation`` for every later input shape, saves it with the ``state_dict`` and
restores it on load; ``choose`` and assigning ``implementation`` override it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.module import _EXTRA_STATE_KEY_SUFFIX

import tdecomp
from tdecomp.layers.execution import chosen_implementations
from tests import helpers


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    return tdecomp.factorize_model(model, "tucker", 0.3, init="random", skip=set(), progress=False)


def _layers(model: nn.Module) -> list[tdecomp.FactorizedLayer]:
    return [m for m in model.modules() if isinstance(m, tdecomp.FactorizedLayer)]


@pytest.fixture
def prefer_reconstructed(monkeypatch):
    """Time 'reconstructed' as faster (the cost model picks 'factorized' for these shapes)."""
    return helpers.prefer_reconstructed(monkeypatch)


def _reconstructs(model: nn.Module, monkeypatch) -> list[nn.Module]:
    calls: list[nn.Module] = []
    for layer in _layers(model):
        original = layer.reconstruct

        def spy(_original=original, _layer=layer):
            calls.append(_layer)
            return _original()

        monkeypatch.setattr(layer, "reconstruct", spy)
    return calls


def _overcomplete() -> tdecomp.FactorizedLayer:
    """A layer whose cost-model choice depends on the input shape (see test_bench)."""
    torch.manual_seed(0)
    return tdecomp.factorize(nn.Linear(32, 32), "lowrank", 2.0, init="random")


def test_cost_model_prefers_factorized_here():
    model, x = _model(), torch.randn(4, 8, 12, 12)
    assert {m.choose_implementation(x.shape) for m in _layers(model)} == {"factorized"}
    assert all(m.chosen_implementation is None for m in _layers(model))  # asking the cost model decides nothing
    model(x)
    assert chosen_implementations(model) == {"0": "factorized", "2": "factorized"}


def test_the_first_forward_decides_once_and_later_shapes_keep_it(monkeypatch):
    layer = _overcomplete()
    big, small = torch.randn(4096, 32), torch.randn(2, 32)
    assert (layer.choose_implementation(big.shape), layer.choose_implementation(small.shape)) == (
        "reconstructed", "factorized")
    calls = _reconstructs(layer, monkeypatch)
    layer(big)
    layer(small)
    assert layer.chosen_implementation == "reconstructed" and len(calls) == 2  # the small input too
    assert layer.choose(small.shape) == "factorized" == layer.chosen_implementation  # decided again, on request
    layer(big)
    assert len(calls) == 2


def test_assigning_implementation_overrides_the_choice():
    layer = _overcomplete()
    layer(torch.randn(4096, 32))
    layer.implementation = "factorized"
    assert layer.chosen_implementation == "factorized" and layer.choose((4096, 32)) == "factorized"
    layer.implementation = "auto"
    assert layer.chosen_implementation is None  # the next forward decides again
    with pytest.raises(ValueError, match=r"implementation='fast'"):
        layer.implementation = "fast"


def test_measured_choice_is_kept_on_the_layer_and_reused_under_compile(prefer_reconstructed, monkeypatch):
    model, x = _model(), torch.randn(4, 8, 12, 12)
    expected = model(x)
    # two layers, each timed twice (both paths), fwd+bwd
    assert len(prefer_reconstructed) == 4
    assert set(chosen_implementations(model).values()) == {"reconstructed"}
    model(x)
    model(torch.randn(2, 8, 10, 10))
    assert len(prefer_reconstructed) == 4  # kept: not timed again, not for a new shape either
    calls = _reconstructs(model, monkeypatch)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")  # Dynamo's trace is what matters here
    with torch.no_grad():
        out = compiled(x)
    assert len(prefer_reconstructed) == 4  # no timing inside the trace
    assert len(calls) == 2  # the trace ran the measured (reconstructed) path of both layers
    torch.testing.assert_close(out, expected.detach(), rtol=1e-4, atol=1e-5)


def test_choose_measures_again_for_a_new_shape(prefer_reconstructed):
    model = _model()
    model(torch.randn(4, 8, 12, 12))
    state = torch.get_rng_state()
    assert [layer.choose((2, layer.spec.in_channels, 6, 6)) for layer in _layers(model)] == ["reconstructed"] * 2
    assert len(prefer_reconstructed) == 8
    assert torch.equal(torch.get_rng_state(), state)  # the random example input leaves the global RNG alone


def test_the_choice_travels_with_the_state_dict(prefer_reconstructed):
    model = _model()
    model(torch.randn(4, 8, 12, 12))
    saved = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in saved.values())  # safetensors / torch.equal still work
    assert {k for k in saved if k.endswith(_EXTRA_STATE_KEY_SUFFIX)} == {f"{n}.{_EXTRA_STATE_KEY_SUFFIX}" for n in "02"}

    fresh = _model()
    assert set(chosen_implementations(fresh).values()) == {None}
    fresh.load_state_dict(saved)
    assert chosen_implementations(fresh) == {"0": "reconstructed", "2": "reconstructed"}
    fresh(torch.randn(4, 8, 12, 12))
    assert len(prefer_reconstructed) == 4  # restored, not measured again


def test_a_checkpoint_without_the_choice_loads_and_decides_again():
    model = _model()
    model(torch.randn(4, 8, 12, 12))
    old = {k: v for k, v in model.state_dict().items() if not k.endswith(_EXTRA_STATE_KEY_SUFFIX)}
    fresh = _model()
    fresh.load_state_dict(old)  # strict: the missing choice is no missing key
    assert set(chosen_implementations(fresh).values()) == {None}
    fresh(torch.randn(4, 8, 12, 12))
    assert set(chosen_implementations(fresh).values()) == {"factorized"}


def test_a_fixed_implementation_is_kept_on_load():
    auto = _overcomplete()
    auto(torch.randn(4096, 32))
    fixed = tdecomp.factorize(nn.Linear(32, 32), "lowrank", 2.0, init="random", implementation="factorized")
    fixed.load_state_dict(auto.state_dict())
    assert auto.chosen_implementation == "reconstructed" and fixed.chosen_implementation == "factorized"
