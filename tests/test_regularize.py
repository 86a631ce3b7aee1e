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
