"""Low-rank overcomplete modes ("wide", "deep", "balanced"), rank rules and the official per-factor
inits, checked against the official definitions (microsoft/fnl_paper frob.py) rewritten here."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import tdecomp
from tdecomp.config import load_config
from tdecomp.train import train
from tests.helpers import assert_rel_close

MODES = ("balanced", "wide", "deep")


def _conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(4, 6, 3, padding=1, dtype=torch.float64)  # matricized (6·3) × (4·3): k = min(18, 12) = 12


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
@pytest.mark.parametrize("module,x", [
    (nn.Linear(12, 20, bias=False), torch.randn(5, 12)),  # k = 12
    (nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), torch.randn(3, 4, 9, 8)),  # (6·3) × (4·3): k = 12
], ids=["linear", "conv2d"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("r", [9, 12, 17])
def test_cost_model_counts_what_the_forward_runs(mode, r, module, x, implementation):
    """The whole forward, per-call products (U M, W) included: U M Vᵀ for deep at every r, for
    balanced only above k, never for wide (the official 2-factor form)."""
    layer = tdecomp.factorize(module, "lowrank", r, overcomplete=mode, init="random", implementation=implementation)
    assert (layer.M is not None) == (mode == "deep" or (mode == "balanced" and r > 12))
    assert 2 * layer.macs(x.shape) == _flops(lambda: layer(x))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("r", [12, 20])
def test_si_is_exact_collapses_and_counts_its_parameters(mode, r):
    conv, x = _conv(), torch.randn(2, 4, 7, 7, dtype=torch.float64)
    layer = tdecomp.factorize(conv, "lowrank", r, overcomplete=mode)
    assert_rel_close(layer.reconstruct(), conv.weight, 1e-10, f"{mode} SI at r={r}")
    assert_rel_close(layer(x), conv(x), 1e-10, f"{mode} forward")
    assert_rel_close(layer.to_dense()(x), layer(x), 1e-10, f"{mode} collapse")
    m, n = 18, 12
    middle = mode == "deep" or (mode == "balanced" and r > 12)
    assert (layer.M is not None) == middle  # deep holds M = I even at r = k (official --square)
    weights = sum(p.numel() for p in layer.factors())
    assert weights == r * (m + n) + (r * r if middle else 0)
    assert weights == tdecomp.LowRankLayer.count_params(layer.spec, (r,), overcomplete=mode)
    if mode != "balanced":  # the official zero-padded SI (frob.py:66-70,147-151)
        assert torch.all(layer.U[:, 12:] == 0) and torch.all(layer.V[:, 12:] == 0)
        if middle:
            assert torch.equal(layer.M, torch.eye(r, dtype=torch.float64))


def _official_rank(layer: nn.Module, scale: float) -> int:
    """frob.py:101 (Linear) and frob.py:143 (conv)."""
    if isinstance(layer, nn.Linear):
        return int(round(scale * min(layer.weight.shape)))
    a, _, c, _ = layer.weight.shape
    return max(int(round(scale * a * c)), 1)


@pytest.mark.parametrize("scale", [1 / 27, 0.111, 1 / 3, 1.0, 3.0])
@pytest.mark.parametrize("module", [nn.Conv2d(16, 8, 3), nn.Conv2d(8, 32, (3, 1)), nn.Linear(20, 7)])
def test_paper_rank_rule_equals_the_official_rank(scale, module):
    layer = tdecomp.factorize(module, "lowrank", tdecomp.RankScale(scale), rank_rule="paper",
                              overcomplete="wide", init="random")
    # a Linear at official rank 0 (frob.py:101 lacks the max(·, 1) of :143) would be degenerate
    assert layer.rank == (max(1, _official_rank(module, scale)),)
    m, n = LR_DIMS(module)
    assert tdecomp.factorize(module, "lowrank", tdecomp.RankScale(scale), init="random").rank == (
        max(1, round(scale * min(m, n))),)


def LR_DIMS(module: nn.Module) -> tuple[int, int]:
    """Our matricization: (c_out·k_h) × (c_in·k_w), or c_out × (c_in·k) when one kernel axis is 1."""
    w = module.weight
    if w.ndim == 2:
        return tuple(w.shape)
    kernel = [k for k in w.shape[2:] if k > 1]
    if len(kernel) == 2:
        return w.shape[0] * kernel[0], w.shape[1] * kernel[1]
    return w.shape[0], w.shape[1] * math.prod(kernel)


def test_kaiming_factors_draws_each_factor_as_the_official_code():
    torch.manual_seed(1)
    conv = nn.Conv2d(64, 128, 3)
    layer = tdecomp.factorize(conv, "lowrank", tdecomp.RankScale(3.0), init="kaiming-factors",
                              rank_rule="paper", overcomplete="wide")
    u, vt = torch.empty(128 * 3, layer.rank[0]), torch.empty(layer.rank[0], 64 * 3)
    nn.init.kaiming_normal_(u), nn.init.kaiming_normal_(vt)  # trainer.py:116 on U and VT
    assert layer.U.std().item() == pytest.approx(u.std().item(), rel=0.02)
    assert layer.V.std().item() == pytest.approx(vt.std().item(), rel=0.02)
    fan = tdecomp.factorize(conv, "lowrank", 0.3, init="fanout-factors")
    expected = math.sqrt(2.0 / (128 * 9))  # main_pretrain.py:63, std √(2/(c_out·k²))
    for factor in (fan.U, fan.V):
        assert factor.std().item() == pytest.approx(expected, rel=0.03)
    with pytest.raises(ValueError, match=r"init='fanout-factors' is not defined for family 'cp' \(it is for: lowrank"):
        tdecomp.factorize(conv, "cp", 0.3, init="fanout-factors")


def _train(layer: nn.Module, steps: int = 20) -> None:
    """SGD with momentum and Frobenius decay on a regression to a random dense conv."""
    torch.manual_seed(2)
    target = nn.Conv2d(4, 6, 3, padding=1, dtype=torch.float64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(steps):
        x = torch.randn(8, 4, 7, 7, dtype=torch.float64)
        loss = (layer(x) - target(x).detach()).pow(2).mean() + 0.5e-3 * layer.frobenius_sq()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_wide_si_keeps_the_extra_columns_exactly_zero_and_kaiming_moves_them():
    layer = tdecomp.factorize(_conv(), "lowrank", 20, overcomplete="wide")
    before = layer.U.detach().clone()
    _train(layer)
    assert not torch.equal(layer.U[:, :12], before[:, :12])  # it trained
    assert torch.all(layer.U[:, 12:] == 0) and torch.all(layer.V[:, 12:] == 0)
    assert torch.linalg.matrix_rank(layer.U @ layer.V.T) == 12
    kaiming = tdecomp.factorize(_conv(), "lowrank", 20, overcomplete="wide", init="kaiming-factors")
    start = kaiming.U[:, 12:].detach().clone()
    _train(kaiming)
    assert (kaiming.U[:, 12:] - start).abs().max() > 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_each_overcomplete_mode_trains_on_digits(tmp_path, mode):
    cfg = load_config(None, dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=256,
                                 batch_size=64, epochs=3, lr=0.05, family="lowrank", rank_scale=1.5,
                                 family_options={"rank_rule": "paper", "overcomplete": mode}, init="spectral", reg="fd",
                                 progress=False, out=str(tmp_path / mode)))
    summary = train(cfg)
    records = [line for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines() if line]
    losses = [json.loads(r)["train_loss"] for r in records]
    assert losses[-1] < losses[0]
    assert summary["param_ratio"] <= 1.0 + 1e-9  # overcomplete layers count collapsed
    assert 0 < summary["factorized_layer_ratio"]
