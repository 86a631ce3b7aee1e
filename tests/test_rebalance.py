"""``tdecomp.rebalance``: a no-op on every W, balanced factor norms, transformed optimizer state, and
the issue-15 divergence of Tucker + Frobenius decay that it removes.

Oracles: the materialized weights and module outputs before vs after (W is exactly invariant in
exact arithmetic), the AM–GM optimum (equal norms), and a tiny momentum-only SGD step whose
change of W must be the same with and without rebalancing (to first order in the step).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdecomp
from tdecomp.layers.attention import FactorizedMultiheadAttention
from tests.helpers import FAMILIES

CONV_1x5 = lambda: nn.Conv2d(6, 8, (1, 5), padding=(0, 2))  # noqa: E731  (the issue's kernel)
MODULES = {"linear": lambda: nn.Linear(12, 10), "conv1x5": CONV_1x5, "conv3x3": lambda: nn.Conv2d(6, 8, 3)}


def _unbalanced(family: str, module: str, ratio: float = 0.5) -> tdecomp.FactorizedLayer:
    """A float64 layer whose factors (CP: every column) are scaled by random factors in [0.1, 10]."""
    layer = tdecomp.factorize(MODULES[module]().double(), family, ratio, init="random")
    with torch.no_grad():
        for f in layer.factors():
            f.mul_(10 ** (2 * torch.rand(f.shape[-1] if family == "cp" else (), dtype=f.dtype) - 1))
    return layer


def _balanced_norms(layer: tdecomp.FactorizedLayer) -> torch.Tensor:
    if layer.family == "cp":
        return torch.stack([f.norm(dim=0) for f in layer.factors()])
    return torch.stack([f.norm() for f in layer.factors()])


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("family", [*FAMILIES, "lowrank_overcomplete"])
def test_rebalance_keeps_w_and_equalizes_factor_norms(family, module):
    ratio = 3.0 if family == "lowrank_overcomplete" else 0.5
    layer = _unbalanced(family.removesuffix("_overcomplete"), module, ratio)
    before = [f.detach().clone() for f in layer.factors()]
    w0, norms0 = layer.reconstruct().detach(), _balanced_norms(layer)
    tdecomp.rebalance(layer)
    torch.testing.assert_close(layer.reconstruct(), w0, rtol=1e-12, atol=1e-14)
    if len(before) <= 2:  # U Vᵀ (and CP/TT of a Linear): plain FD, untouched
        assert all(torch.equal(a, b) for a, b in zip(layer.factors(), before))
        return
    norms = _balanced_norms(layer)
    geometric_mean = norms0.log().mean(0).exp()
    torch.testing.assert_close(norms, geometric_mean.expand_as(norms), rtol=1e-12, atol=0)
    assert norms.pow(2).sum() < norms0.pow(2).sum()  # the smallest Σ‖T_k‖² at this W (AM–GM)


def test_rebalance_of_a_zero_factor_changes_nothing():
    layer = _unbalanced("tucker", "conv1x5")
    with torch.no_grad():
        layer.factors()[1].zero_()
    before = [f.detach().clone() for f in layer.factors()]
    tdecomp.rebalance(layer)
    assert all(torch.equal(a, b) for a, b in zip(layer.factors(), before))


@pytest.mark.parametrize("family", ["tucker", "lowrank"])
def test_rebalance_keeps_attention_outputs_with_biases_in_factor_space(family):
    module = nn.MultiheadAttention(16, 4, kdim=12, vdim=10).double()
    layer = FactorizedMultiheadAttention.from_dense(module, (6, 5) if family == "tucker" else 3, family=family)
    with torch.no_grad():
        for p in (layer.q_bias, layer.v_bias, layer.out_bias):
            p.normal_()
        for products, scale in ((layer.qk, 3.0), (layer.ov, 0.2)):
            products.V.mul_(scale)
    q, k, v = (torch.randn(5, 2, d, dtype=torch.float64) for d in (16, 12, 10))
    before = [p.detach().clone() for p in layer.parameters()]
    out0 = layer(q, k, v)[0]
    tdecomp.rebalance(layer)
    torch.testing.assert_close(layer(q, k, v)[0], out0, rtol=1e-12, atol=1e-12)
    if family == "lowrank":
        assert all(torch.equal(a, b) for a, b in zip(layer.parameters(), before))
    else:
        for products in (layer.qk, layer.ov):
            norms = torch.stack([p.norm() for p in (products.core, products.U, products.V)])
            torch.testing.assert_close(norms, norms.mean().expand(3), rtol=1e-12, atol=0)


def _step_delta_w(layer, optimizer) -> torch.Tensor:
    """ΔW of one optimizer step taken on zero gradients (SGD: the momentum part alone)."""
    w = layer.reconstruct().detach()
    for f in layer.factors():
        f.grad = torch.zeros_like(f)
    optimizer.step()
    return layer.reconstruct().detach() - w


def _tucker_after_one_momentum_step() -> tuple[tdecomp.FactorizedLayer, torch.optim.SGD]:
    torch.manual_seed(0)
    layer = _unbalanced("tucker", "conv1x5")
    optimizer = torch.optim.SGD(layer.factors(), lr=1e-2, momentum=0.9)
    (0.5 * tdecomp.frobenius_decay(layer) + layer.reconstruct().sum()).backward()
    optimizer.step()
    optimizer.param_groups[0]["lr"] = 1e-7
    return layer, optimizer


def test_sgd_momentum_buffers_keep_the_pending_step_of_w():
    """The momentum buffer is the pending step, rescaled like its parameter: the next step's
    momentum part moves W as it would have without rebalancing, up to O(η)."""
    reference = _step_delta_w(*_tucker_after_one_momentum_step())
    layer, optimizer = _tucker_after_one_momentum_step()
    tdecomp.rebalance(layer, optimizer)
    rescaled = _step_delta_w(layer, optimizer)
    assert reference.norm() > 0
    torch.testing.assert_close(rescaled, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))


def test_adam_moments_transform_as_gradient_statistics():
    layer = _unbalanced("tt", "conv1x5")
    optimizer = torch.optim.AdamW(layer.factors(), lr=1e-3)
    tdecomp.frobenius_decay(layer).backward()
    optimizer.step()
    params0 = [p.detach().clone() for p in layer.factors()]
    state0 = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in layer.factors()]
    tdecomp.rebalance(layer, optimizer)
    for p, p0, s0 in zip(layer.factors(), params0, state0):
        c = p.norm() / p0.norm()  # TT: one scalar per core
        torch.testing.assert_close(optimizer.state[p]["exp_avg"], s0["exp_avg"] / c, rtol=1e-12, atol=0)
        torch.testing.assert_close(optimizer.state[p]["exp_avg_sq"], s0["exp_avg_sq"] / c**2, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------- issue 15
def _conv1x5_net(widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out in zip((1, *widths), widths):
        layers += [nn.Conv2d(c_in, c_out, (1, 5), padding=(0, 2)), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 10))


def _signals(n: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-1D-like data as (n, 1, 1, 40) images: 10 smooth templates, shifted, plus noise."""
    g = torch.Generator().manual_seed(0)
    templates = F.avg_pool1d(torch.randn(10, 1, 60, generator=g), 5, 1, 2)[:, 0]
    y = torch.randint(0, 10, (n,), generator=g)
    window = torch.randint(0, 20, (n, 1), generator=g) + torch.arange(40)
    x = templates[y[:, None], window] + 0.3 * torch.randn(n, 40, generator=g)
    return x[:, None, None, :], y


def _train_tucker_fd(
    seed: int, steps: int, widths: tuple[int, ...], rebalance: bool
) -> tuple[int | None, float, float]:
    """Issue 15's recipe (lr 0.05, momentum 0.9, batch 128, λ = 5e-4, Tucker random init, FD in the
    loss) with today's squashed spatial ranks; returns (NaN step or None, max factor norm, max
    balancedness) over training."""
    x, y = _signals()
    torch.manual_seed(seed)
    model = tdecomp.factorize_model(_conv1x5_net(widths), "tucker", 0.1, init="random", progress=False,
                                    fixed_spatial=False)
    layers = [m for m in model.modules() if isinstance(m, tdecomp.FactorizedLayer)]
    optimizer = torch.optim.SGD(tdecomp.param_groups(model, 5e-4, 5e-4), lr=0.05, momentum=0.9)
    max_norm = max_balance = 0.0
    for step in range(steps):
        index = torch.randint(0, len(x), (128,))
        loss = F.cross_entropy(model(x[index]), y[index]) + 0.5 * 5e-4 * tdecomp.frobenius_decay(model)
        if not math.isfinite(float(loss.detach())):
            return step, math.inf, math.inf
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if rebalance:
            tdecomp.rebalance(model, optimizer)
        with torch.no_grad():
            max_norm = max(max_norm, *(float(f.norm()) for m in layers for f in m.factors()))
            max_balance = max(max_balance, *(float(m.balancedness()) for m in layers))
    return None, max_norm, max_balance


@pytest.mark.parametrize("reg,rebalance,expected", [("fd", None, True), ("wd", None, False), ("fd", False, False),
                                                    ("none", True, True)])
def test_trainer_rebalances_after_each_step_by_default_under_fd(tmp_path, reg, rebalance, expected):
    from tdecomp.config import load_config
    from tdecomp.train import Trainer

    cfg = load_config(None, dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=128,
                                 batch_size=64, epochs=1, family="tucker", init="random", reg=reg,
                                 rebalance=rebalance, rank=0.3, progress=False, out=str(tmp_path / "run")))
    trainer = Trainer(cfg)
    assert trainer.reg_policy.rebalances is expected
    trainer.fit()
    layers = [m for m in trainer.model.modules() if isinstance(m, tdecomp.FactorizedLayer)]
    norms = [torch.stack([f.norm() for f in m.factors()]) for m in layers]
    assert all(torch.allclose(n, n.mean().expand_as(n), rtol=1e-4) for n in norms) is expected


def _assert_trains_stably(seed: int) -> None:
    """With rebalancing the (max) factor norm stays ≈ 2.1 and balancedness ≈ 2.5; without it seeds 0 and
    1 reach balancedness ≈ 11 (the slow control below)."""
    nan_step, max_norm, max_balance = _train_tucker_fd(seed, 300, (16, 32, 32, 32), rebalance=True)
    assert nan_step is None, f"seed {seed}: NaN loss at step {nan_step}"
    assert max_norm < 5 and max_balance < 8, f"seed {seed}: factor norm {max_norm}, balancedness {max_balance}"


def test_issue15_tucker_random_fd_trains_300_steps_without_nan():
    _assert_trains_stably(0)


@pytest.mark.slow
def test_issue15_without_rebalancing_the_same_run_breaks_the_bounds():
    """The control that shows the test above can fail: plain FD on the same seed ends with balancedness
    ≈ 11 (seeds 0 and 1; no NaN within 300 steps with today's code, where issue 15's run hit NaN)."""
    nan_step, _, max_balance = _train_tucker_fd(0, 300, (16, 32, 32, 32), rebalance=False)
    assert nan_step is not None or max_balance > 8, (nan_step, max_balance)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 5))
def test_issue15_tucker_random_fd_trains_without_nan_over_5_seeds(seed):
    _assert_trains_stably(seed)
