"""``inner``, ``balancedness`` and ``singular_values`` of every family against brute force.

Oracles: the materialized weights (``reconstruct``, itself checked against tensorly and dense
convs in test_layers.py), ``torch.linalg.svdvals`` of a matricization written here, and — for
balancedness, whose value is a family-specific choice — the two properties it promises: its
first-order change vanishes along any loss gradient of W (gradient flow conserves it), and along
the weight-decay direction −θ its square shrinks at exactly rate 4 (every Gram difference is
quadratic in the factors).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

import tdecomp
from tests.helpers import FAMILIES, assert_rel_close, make_dense, matricize

CASES = ("linear", "conv3x3_s1_p1", "conv1x1", "conv3x2_s21_reflect", "conv1x5_s21_p12", "conv1d_k5_s2",
         "conv3d_k3_p1")
OVERCOMPLETE = ("linear", "conv3x3_s1_p1")


def _layers():
    """(id, layer) for every family × case at random init (unbalanced), plus overcomplete lowrank."""
    cases = [(f"{f}-{c}", f, c, 0.5) for f in FAMILIES for c in CASES]
    cases += [(f"lowrank_over-{c}", "lowrank", c, 3.0) for c in OVERCOMPLETE]
    return [pytest.param(f, c, r, id=i) for i, f, c, r in cases]


def _build(family: str, case: str, ratio: float) -> tdecomp.FactorizedLayer:
    module, _ = make_dense(case)
    layer = tdecomp.factorize(module, family, ratio, init="random")
    assert family != "lowrank" or layer.overcomplete == (ratio > 1)
    return layer


def _with_factors(layer: tdecomp.FactorizedLayer, factors: list[torch.Tensor]) -> torch.Tensor:
    """The weight the layer has when its factors are replaced by ``factors``."""
    clone = copy.deepcopy(layer)
    with torch.no_grad():
        for p, f in zip(clone.factors(), factors):
            p.copy_(f)
    return clone.reconstruct()


@pytest.mark.parametrize("family,case,ratio", _layers())
def test_inner_equals_brute_force_inner_of_reconstructions(family, case, ratio):
    layer = _build(family, case, ratio)
    other = [f.detach() + 0.3 * torch.randn_like(f) for f in layer.factors()]
    brute = (layer.reconstruct() * _with_factors(layer, other)).sum()
    assert_rel_close(layer.inner(other), brute, 1e-10, f"{family} inner")
    assert_rel_close(layer.inner(layer.factors()), layer.frobenius_sq(), 1e-10, f"{family} inner(self)")


@pytest.mark.parametrize("family,case,ratio", _layers())
def test_singular_values_equal_svd_of_the_materialized_matricization(family, case, ratio):
    layer = _build(family, case, ratio)
    brute = torch.linalg.svdvals(matricize(layer.reconstruct().detach()))
    fast = layer.singular_values().detach()
    assert fast.ndim == 1 and fast.numel() <= brute.numel()
    assert torch.all(fast[:-1] >= fast[1:]), "not descending"
    padded = torch.cat([fast, fast.new_zeros(brute.numel() - fast.numel())])
    assert torch.allclose(padded, brute, rtol=0, atol=1e-10 * float(brute[0]))


def _balancedness_derivative(layer: tdecomp.FactorizedLayer, direction: list[torch.Tensor]) -> torch.Tensor:
    """d/dt balancedness(θ + t·direction)² at t = 0, by forward-mode autodiff."""
    names = [n for n, p in layer.named_parameters() if not n.endswith("bias")]
    params = dict(layer.named_parameters())

    class _Balancedness(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self) -> torch.Tensor:
            return self.layer.balancedness().square()

    probe = _Balancedness()

    def value(*factors: torch.Tensor) -> torch.Tensor:
        return functional_call(probe, {f"layer.{n}": f for n, f in zip(names, factors)}, ())

    primals = tuple(params[n].detach() for n in names)
    return jvp(value, primals, tuple(direction))[1]


@pytest.mark.parametrize("family,case,ratio", _layers())
def test_balancedness_is_conserved_by_gradient_flow_and_shrunk_by_weight_decay(family, case, ratio):
    layer = _build(family, case, ratio)
    b_sq = layer.balancedness().detach().square()
    assert b_sq > 1e-6, "random init should be unbalanced (else the test below is vacuous)"
    names = [n for n, _ in layer.named_parameters() if not n.endswith("bias")]
    factors = [dict(layer.named_parameters())[n] for n in names]
    target = torch.randn(layer.spec.weight_shape, dtype=torch.float64)
    loss = (torch.sin(layer.reconstruct()) * target).sum() + layer.frobenius_sq()  # any loss of W
    grads = torch.autograd.grad(loss, factors)
    along_gradient = _balancedness_derivative(layer, [-g for g in grads])
    scale = sum(g.norm() * f.norm() for g, f in zip(grads, factors)) * b_sq.sqrt()
    assert abs(along_gradient) < 1e-10 * scale, f"{family}: not conserved ({along_gradient} vs {scale})"
    along_decay = _balancedness_derivative(layer, [-f.detach() for f in factors])
    assert_rel_close(along_decay, -4 * b_sq, 1e-10, f"{family} weight-decay rate")


def test_lowrank_spectral_init_is_balanced():
    for case in ("linear", "conv3x3_s1_p1"):
        module, _ = make_dense(case)
        for ratio in (0.5, 3.0):
            layer = tdecomp.factorize(module, "lowrank", ratio)
            assert layer.balancedness() < 1e-10 * layer.frobenius_sq()


def _train_lowrank(weight_decay: float, steps: int = 300, lr: float = 2e-3) -> tuple[float, float]:
    """Plain GD on a regression loss of a random-init (unbalanced) low-rank Linear layer;
    returns balancedness before and after."""
    torch.manual_seed(1)
    layer = tdecomp.factorize(nn.Linear(12, 10).double(), "lowrank", 0.5, init="random")
    x = torch.randn(64, 12, dtype=torch.float64)
    y = x @ torch.randn(12, 10, dtype=torch.float64)
    opt = torch.optim.SGD(layer.factor_parameters(), lr=lr, weight_decay=weight_decay)
    before = float(layer.balancedness().detach())
    for _ in range(steps):
        opt.zero_grad()
        (layer(x) - y).square().mean().backward()
        opt.step()
    return before, float(layer.balancedness().detach())


def test_known_dynamic_gd_keeps_balancedness_while_factor_weight_decay_drives_it_to_zero():
    before, plain = _train_lowrank(weight_decay=0.0)
    _, decayed = _train_lowrank(weight_decay=2.0)
    assert abs(plain - before) < 0.02 * before, (before, plain)
    # each step multiplies every Gram difference by ≈ (1 − ηλ)², so ≈ e^{−2·ηλ·steps} = e^{−2.4}
    assert decayed < 0.15 * before, (before, decayed)

