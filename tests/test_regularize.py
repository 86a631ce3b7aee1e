"""Frobenius decay and parameter groups against brute force."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdecomp
from tests.helpers import FAMILIES, TinyResNet


@pytest.mark.parametrize("family", FAMILIES)
def test_frobenius_decay_sums_reconstructed_norms(family):
    model = tdecomp.factorize_model(TinyResNet().double(), family, 0.3, progress=False)
    brute = sum(
        m.reconstruct().pow(2).sum() for m in model.modules() if isinstance(m, tdecomp.FactorizedLayer)
    )
    assert torch.allclose(tdecomp.frobenius_decay(model), brute, rtol=1e-10)


def test_frobenius_decay_of_a_dense_model_is_zero():
    assert tdecomp.frobenius_decay(nn.Linear(3, 3)).item() == 0.0


@pytest.mark.parametrize("fd", [0.0, 5e-4])
def test_param_groups_partition(fd):
    model = tdecomp.factorize_model(TinyResNet(), "lowrank", 0.3, progress=False)
    groups = {g["name"]: g for g in tdecomp.param_groups(model, weight_decay=1e-4, frobenius_decay=fd)}
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    factor_ids = {id(p) for m in model.modules() if isinstance(m, tdecomp.FactorizedLayer)
                  for n, p in m.named_parameters() if not n.endswith("bias")}
    assert {id(p) for p in groups["factors"]["params"]} == factor_ids
    assert groups["factors"]["weight_decay"] == (0.0 if fd else 1e-4)
    assert groups["factors"]["frobenius_decay"] == fd
    assert {id(p) for p in groups["decay"]["params"]} == {id(model.stem.weight), id(model.fc.weight)}
    assert groups["decay"]["weight_decay"] == 1e-4
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert id(model.fc.bias) in no_decay and id(model.bn.weight) in no_decay
    assert groups["no_decay"]["weight_decay"] == 0.0
    torch.optim.SGD(list(groups.values()), lr=0.1)  # accepted by a real optimizer


def test_fd_step_equals_weight_decay_on_the_product_gradient():
    """One SGD step with FD in the loss moves U by −lr·λ·U(VᵀV): the closed-form FD gradient."""
    layer = tdecomp.factorize(nn.Linear(6, 5).double(), "lowrank", 3)
    lam, lr = 0.1, 0.5
    u0, v0 = layer.U.detach().clone(), layer.V.detach().clone()
    opt = torch.optim.SGD(tdecomp.param_groups(layer, 0.0, lam), lr=lr)
    (0.5 * lam * tdecomp.frobenius_decay(layer)).backward()
    opt.step()
    assert torch.allclose(layer.U, u0 - lr * lam * u0 @ (v0.T @ v0))
    assert torch.allclose(layer.V, v0 - lr * lam * v0 @ (u0.T @ u0))


def test_negative_decay_is_rejected():
    with pytest.raises(ValueError, match="weight_decay"):
        tdecomp.param_groups(nn.Linear(2, 2), weight_decay=-1.0)


def _stack_of_same_shapes(family: str) -> nn.Module:
    """Three same-shaped convs and two same-shaped linears (two batched groups) + one odd layer."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(6, 6, 3) for _ in range(3)], nn.Conv2d(6, 4, 1),
                          *[nn.Linear(8, 8) for _ in range(2)])
    return tdecomp.factorize_model(model, family, 0.4, init="random", skip=set(), progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_frobenius_decay_equals_the_per_layer_sum_and_its_gradient(family):
    model = _stack_of_same_shapes(family).double()
    layers = [m for m in model.modules() if isinstance(m, tdecomp.FactorizedLayer)]
    per_layer = sum(m.frobenius_sq() for m in layers)
    batched = tdecomp.frobenius_decay(model)
    params = [p for m in layers for p in m.factor_parameters()]
    torch.testing.assert_close(batched, per_layer, rtol=1e-12, atol=0)
    for a, b in zip(torch.autograd.grad(batched, params), torch.autograd.grad(per_layer, params)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_frobenius_decay_runs_in_float32_under_autocast():
    model = _stack_of_same_shapes("tucker")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = tdecomp.frobenius_decay(model)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, tdecomp.frobenius_decay(model), rtol=1e-6, atol=0)


@pytest.mark.parametrize("fd", [0.0, 5e-4])
def test_wd_skip_takes_every_parameter_of_the_named_modules_out_of_weight_decay(fd):
    """Modules whose name ends with an entry: all their parameters (factors too) at decay 0; the rest
    as without ``wd_skip``."""
    model = tdecomp.factorize_model(TinyResNet(), "lowrank", 0.3, progress=False)
    skip = ("layers.1.shortcut", ".bn1")

    def decays(**kw) -> dict[str, float]:
        wd = {id(p): g["weight_decay"] for g in tdecomp.param_groups(model, 1e-4, fd, True, **kw) for p in g["params"]}
        return {n: wd[id(p)] for n, p in model.named_parameters()}

    def skipped(name: str) -> bool:  # some enclosing module's name ends with an entry
        parts = name.split(".")[:-1]
        return any(".".join(parts[:i]).endswith(skip) for i in range(1, len(parts) + 1))

    plain, with_skip = decays(), decays(wd_skip=skip)
    hit = {n for n in plain if skipped(n)}
    assert {"layers.1.shortcut.0.U", "layers.1.shortcut.1.bias", "layers.2.bn1.weight"} <= hit
    assert with_skip == {n: 0.0 if n in hit else wd for n, wd in plain.items()}
    assert any(wd > 0 for n, wd in plain.items() if n in hit)  # the test takes something away
