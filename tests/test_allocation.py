"""Rank allocation rules against models whose layers have known ranks (oracle: the construction)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp.allocation import available_allocations
from tdecomp.layers.tt import _tt_shape
from tdecomp.layers.tucker import _mode_products
from tests.helpers import FAMILIES, TinyResNet

F64 = torch.float64


def _lowrank_weight(spec: tdecomp.DenseSpec, rank: tuple[int, ...]) -> torch.Tensor:
    """Conv weight whose (c_out·k_h) × (c_in·k_w) matricization has rank ``rank[0]``."""
    o, i, kh, kw = spec.weight_shape
    m = torch.randn(o * kh, rank[0], dtype=F64) @ torch.randn(rank[0], i * kw, dtype=F64)
    return m.reshape(o, kh, i, kw).permute(0, 2, 1, 3)


def _tucker_weight(spec: tdecomp.DenseSpec, rank: tuple[int, ...]) -> torch.Tensor:
    """Random core of multilinear rank ``rank`` times random factors."""
    factors = [torch.randn(n, r, dtype=F64) for n, r in zip(spec.weight_shape, rank)]
    return _mode_products(torch.randn(rank, dtype=F64), factors)


def _tt_weight(spec: tdecomp.DenseSpec, rank: tuple[int, ...]) -> torch.Tensor:
    """Random TT cores with internal ranks ``rank`` over (c_in, k_h, k_w, c_out)."""
    full = (1, *rank, 1)
    out = torch.ones(1, 1, dtype=F64)
    for a, n, b in zip(full, _tt_shape(spec), full[1:]):
        out = (out @ torch.randn(a, n * b, dtype=F64)).reshape(-1, b)
    return out.reshape(_tt_shape(spec)).movedim(-1, 0)


# family -> (weight builder, true ranks of the three convs): different per layer, feasible
EXACT = {
    "lowrank": (_lowrank_weight, [(4,), (9,), (15,)]),
    "tucker": (_tucker_weight, [(3, 5, 3, 3), (7, 4, 3, 3), (10, 6, 3, 3)]),
    "tt": (_tt_weight, [(3, 7, 4), (5, 9, 6), (6, 14, 9)]),
}


def _exact_model(family: str) -> tuple[nn.Sequential, list[tuple[int, ...]]]:
    build, ranks = EXACT[family]
    convs = [nn.Conv2d(8, 12, 3, padding=1), nn.Conv2d(12, 16, 3, padding=1), nn.Conv2d(16, 20, 3, padding=1)]
    model = nn.Sequential(*convs).double()
    with torch.no_grad():
        for conv, rank in zip(convs, ranks):
            conv.weight.copy_(build(tdecomp.DenseSpec.from_module(conv), rank))
    return model, ranks


def _matching_ratio(model: nn.Module, family: str, ranks: list[tuple[int, ...]]) -> float:
    """The parameter ratio (weights and biases) of ``family`` layers at exactly ``ranks``."""
    cls = tdecomp.get_family(family)
    specs = [tdecomp.DenseSpec.from_module(m) for m in model]
    held = sum(cls.count_params(s, r) + s.out_channels for s, r in zip(specs, ranks))
    return held / sum(s.num_params for s in specs)


@pytest.mark.parametrize("family", sorted(EXACT))
def test_energy_recovers_exact_ranks_and_uniform_does_not(family):
    model, true = _exact_model(family)
    ratio = _matching_ratio(model, family, true)
    weights = [m.weight.detach().clone() for m in model]
    results = {}
    for rule in ("energy", "uniform"):
        factorized = tdecomp.factorize_model(copy.deepcopy(model), family, ratio, skip=(), progress=False,
                                             allocation=rule)
        errors = [float((layer.reconstruct().detach() - w).norm() / w.norm()) for layer, w in zip(factorized, weights)]
        results[rule] = ([layer.rank for layer in factorized], errors)
    ranks, errors = results["energy"]
    assert ranks == true
    assert max(errors) < 1e-8
    ranks, errors = results["uniform"]
    assert ranks != true and max(errors) > 1e-3


def test_stable_rank_allocation_is_proportional_to_stable_rank():
    torch.manual_seed(0)
    layers = []
    for out, inp, decay in [(40, 30, 0.5), (50, 40, 0.8), (30, 60, 0.95)]:
        layer = nn.Linear(inp, out).double()
        k = min(out, inp)
        u, _ = torch.linalg.qr(torch.randn(out, k, dtype=F64))
        v, _ = torch.linalg.qr(torch.randn(inp, k, dtype=F64))
        with torch.no_grad():
            layer.weight.copy_(u * decay ** torch.arange(k, dtype=F64) @ v.T)
        layers.append(layer)
    model = nn.Sequential(*layers)
    stable = [float(m.weight.square().sum() / torch.linalg.matrix_norm(m.weight, 2) ** 2) for m in model]
    tdecomp.factorize_model(model, "lowrank", 0.3, skip=(), progress=False, allocation="stable-rank")
    ranks = [layer.rank[0] for layer in model]
    scale = sum(ranks) / sum(stable)
    assert all(abs(r - scale * s) <= 1.5 for r, s in zip(ranks, stable)), (ranks, stable)
    assert len(set(ranks)) == 3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rule", available_allocations())
def test_every_rule_meets_the_budget(family, rule):
    torch.manual_seed(0)
    model = TinyResNet(width=8)
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))) for _ in range(2)]  # what the data rules read
    calibration = tdecomp.calibrate(model, batches, loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))
    tdecomp.factorize_model(model, family, 0.4, progress=False, allocation=rule, calibration=calibration)
    assert tdecomp.summarize(model).ratio == pytest.approx(0.4, rel=0.02)


def test_allocation_errors_name_the_fix():
    with pytest.raises(ValueError, match="allocation='svd' is not valid.*'energy'"):
        tdecomp.factorize_model(TinyResNet(), "lowrank", 0.3, progress=False, allocation="svd")
    with pytest.raises(ValueError, match="float"):
        tdecomp.factorize_model(TinyResNet(), "lowrank", 4, progress=False, allocation="energy")


def test_energy_recovers_exact_ranks_of_conv1d_layers():
    torch.manual_seed(0)
    true, convs = [2, 5, 9], [nn.Conv1d(6, 10, 5), nn.Conv1d(10, 12, 5), nn.Conv1d(12, 16, 3)]
    model = nn.Sequential(*convs).double()
    with torch.no_grad():
        for conv, r in zip(convs, true):  # rank r as c_out × (c_in·k), the low-rank matricization
            o, i, k = conv.weight.shape
            conv.weight.copy_((torch.randn(o, r, dtype=F64) @ torch.randn(r, i * k, dtype=F64)).reshape(o, i, k))
    weights = [m.weight.detach().clone() for m in model]
    ratio = _matching_ratio(model, "lowrank", [(r,) for r in true])
    tdecomp.factorize_model(model, "lowrank", ratio, skip=(), progress=False, allocation="energy")
    assert [layer.rank for layer in model] == [(r,) for r in true]
    assert max(float((layer.reconstruct().detach() - w).norm() / w.norm()) for layer, w in zip(model, weights)) < 1e-8
