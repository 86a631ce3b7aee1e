"""The measured implementation choice (the CUDA path, driven on the CPU by an injected timer):
measured once per key, cached, and reused — not re-measured — by a ``torch.compile`` trace."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp.layers import choice


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    return tdecomp.factorize_model(model, "tucker", 0.3, init="random", skip=set(), progress=False)


@pytest.fixture
def prefer_reconstructed(monkeypatch):
    """Time 'reconstructed' as faster (the cost model picks 'factorized' for these shapes)."""
    timed: list[str] = []

    def timer(run):
        run()
        timed.append("timed")
        return len(timed) % 2 * 1.0  # 1st of each pair (factorized) 1 s, 2nd (reconstructed) 0 s

    monkeypatch.setattr(choice, "TIMER", timer)
    monkeypatch.setattr(choice, "MEASURED_DEVICES", frozenset({"cpu"}))
    monkeypatch.setattr(choice, "MEASURED", {})
    return timed


def _reconstructs(model: nn.Module, monkeypatch) -> list[nn.Module]:
    calls: list[nn.Module] = []
    for layer in model.modules():
        if isinstance(layer, tdecomp.FactorizedLayer):
            original = layer.reconstruct

            def spy(_original=original, _layer=layer):
                calls.append(_layer)
                return _original()

            monkeypatch.setattr(layer, "reconstruct", spy)
    return calls


def test_cost_model_prefers_factorized_here():
    model, x = _model(), torch.randn(4, 8, 12, 12)
    assert {m.choose_implementation(x.shape) for m in model if isinstance(m, tdecomp.FactorizedLayer)} == {
        "factorized"}


def test_measured_choice_is_cached_and_reused_under_compile(prefer_reconstructed, monkeypatch):
    model, x = _model(), torch.randn(4, 8, 12, 12)
    expected = model(x)
    # two layers, different geometry: each timed twice (both paths), fwd+bwd
    assert len(prefer_reconstructed) == 4
    assert all(set(m._choices.values()) == {"reconstructed"} for m in model if hasattr(m, "_choices"))
    model(x)
    assert len(prefer_reconstructed) == 4  # cached
    calls = _reconstructs(model, monkeypatch)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")  # Dynamo's trace is what matters here
    with torch.no_grad():
        out = compiled(x)
    assert len(prefer_reconstructed) == 4  # no timing inside the trace
    assert len(calls) == 2  # the trace ran the measured (reconstructed) path of both layers
    torch.testing.assert_close(out, expected.detach(), rtol=1e-4, atol=1e-5)


def test_a_new_input_shape_is_measured_again(prefer_reconstructed):
    model = _model()
    model(torch.randn(4, 8, 12, 12))
    model(torch.randn(2, 8, 12, 12))
    assert len(prefer_reconstructed) == 8
