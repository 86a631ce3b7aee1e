"""SI of zero or rank-deficient weights pads the missing directions so every factor trains, keeps the
weight's best approximation within PAD_FRACTION, and says so in the report (issue 21 item 4)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp.layers.spectral import PAD_FRACTION, RANK_DEFICIENT, ZERO_WEIGHT
from tests.helpers import FAMILIES

MODULES = {
    "linear": (lambda: nn.Linear(12, 10), (4, 12)),
    "conv2d": (lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 5, 5)),
    "conv1d": (lambda: nn.Conv1d(6, 8, 3), (2, 6, 9)),
}


def _module(kind: str, weight: str) -> tuple[nn.Module, torch.Tensor]:
    build, shape = MODULES[kind]
    module = build().double()
    with torch.no_grad():
        if weight == "zero":
            module.weight.zero_()
        else:  # a rank-1 tensor: the outer product of one vector per mode (rank 1 in every format)
            vectors = [torch.randn(n, dtype=torch.float64) for n in module.weight.shape]
            outer = vectors[0]
            for v in vectors[1:]:
                outer = outer[..., None] * v
            module.weight.copy_(outer)
    return module, torch.randn(shape, dtype=torch.float64)


def _one_step(layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """One SGD step on a regression loss; the factors' gradients."""
    target = torch.randn_like(layer(x))
    loss = (layer(x) - target).square().mean()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    opt.zero_grad()
    loss.backward()
    grads = [f.grad.clone() for f in layer.factors()]
    opt.step()
    return grads


@pytest.mark.parametrize("kind", MODULES)
@pytest.mark.parametrize("family", FAMILIES)
def test_si_of_a_zero_weight_gives_every_factor_a_gradient(family, kind):
    module, x = _module(kind, "zero")
    layer = tdecomp.factorize(module, family, 4)
    assert layer.si_padding == ZERO_WEIGHT
    default_norm = layer.spec.default_std * math.sqrt(layer.spec.weight_numel)  # ‖PyTorch's default init‖
    assert 0 < float(layer.reconstruct().norm()) <= PAD_FRACTION * default_norm * (1 + 1e-9)
    before = [f.detach().clone() for f in layer.factors()]
    grads = _one_step(layer, x)
    assert all(g.abs().sum() > 0 for g in grads), [float(g.norm()) for g in grads]
    assert all(not torch.equal(f, b) for f, b in zip(layer.factors(), before))


@pytest.mark.parametrize("kind", MODULES)
@pytest.mark.parametrize("family", FAMILIES)
def test_si_of_a_rank_one_weight_keeps_its_best_approximation(family, kind):
    module, x = _module(kind, "rank1")
    layer = tdecomp.factorize(module, family, 4)
    # every format holds a rank-1 tensor exactly at these ranks: the best approximation is W itself
    # (CP's ALS reaches it to ~1e-8)
    error = float((layer.reconstruct() - module.weight).norm() / module.weight.norm())
    assert error <= PAD_FRACTION * (1 + 1e-4)
    assert all(g.abs().sum() > 0 for g in _one_step(layer, x))


@pytest.mark.parametrize("family", ["lowrank", "cp"])
def test_every_component_of_a_rank_deficient_weight_trains(family):
    """Low rank and CP put a missing direction in both factors of a component (zero on both sides): those
    components are padded, and each one's gradient is then a visible fraction of the largest."""
    module, x = _module("linear", "rank1")
    layer = tdecomp.factorize(module, family, 4)
    assert layer.si_padding == RANK_DEFICIENT
    for g in _one_step(layer, x):
        columns = g.norm(dim=0)
        assert float(columns.min()) > 1e-3 * float(columns.max()), columns


@pytest.mark.parametrize("family", FAMILIES)
def test_si_of_a_full_rank_weight_is_not_touched(family):
    module = nn.Conv2d(6, 8, 3).double()
    torch.manual_seed(3)
    layer = tdecomp.factorize(module, family, 0.5)
    torch.manual_seed(3)  # the same draws as factorize: construction, then the family's SI alone
    plain = tdecomp.get_family(family)(layer.spec, layer.rank, dtype=torch.float64)
    plain.init_spectral(module.weight.detach())
    assert layer.si_padding is None
    assert all(torch.equal(a, b) for a, b in zip(layer.factors(), plain.factors()))


def test_the_report_and_a_warning_name_the_padded_layers(caplog):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    nn.init.zeros_(model[4].weight)  # a zero-initialized head (torchvision's ViT, LoRA's B)
    with caplog.at_level(logging.WARNING, logger="tdecomp"):
        tdecomp.factorize_model(model, "lowrank", 0.5, skip=(), progress=False)
    notes = {r.name: r.note for r in tdecomp.summarize(model).layers}
    assert notes == {"0": "", "2": "", "4": "SI padded: zero weight"}
    assert "SI padded: zero weight" in str(tdecomp.summarize(model))
    assert any(r.levelno == logging.WARNING and "zero weight" in r.getMessage() and ": 4" in r.getMessage()
               for r in caplog.records)
