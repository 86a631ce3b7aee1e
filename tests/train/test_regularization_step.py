"""The trainer's regularization pinned to its definition: one optimizer step with ``reg=fd`` is SGD
on loss + λ/2·Σ‖W‖²_F of the materialized products (autograd on ``reconstruct()``), and with
``reg=wd`` SGD with weight decay λ on the factors (dense weights get λ in both); ``rebalance`` (default
on under ``fd``) then applies :func:`tdecomp.rebalance` to the stepped parameters."""

from __future__ import annotations

import copy

import pytest
import torch

import tdecomp
from tdecomp.config import load_config
from tdecomp.layers.base import FactorizedLayer
from tdecomp.train import Trainer

LR, LAM = 0.1, 0.05


def _one_step(tmp_path, reg: str, family: str, rebalance: bool | None):
    cfg = load_config(None, dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=64,
                                 batch_size=64, epochs=1, lr=LR, weight_decay=LAM, family=family,
                                 rank=0.4, reg=reg, rebalance=rebalance, schedule="constant", progress=False,
                                 out=str(tmp_path / reg)))
    trainer = Trainer(cfg)
    before = copy.deepcopy(trainer.model)
    trainer.sampler.set_epoch(0)
    (batch,) = list(trainer._batches(trainer.train_loader))  # the one batch the epoch will see
    trainer._train_epoch(0)
    return trainer, before, batch


def _expected(trainer, model, batch, reg: str) -> dict[str, torch.Tensor]:
    """SGD by hand: loss (+ λ/2 ‖reconstruct()‖² for fd) by autograd, then p − lr·(g + decay·p),
    then :func:`tdecomp.rebalance` on a copy of ``model`` holding those values if the trainer's
    config rebalances."""
    loss, _ = trainer.task.training_step(model, batch)
    factorized = [m for m in model.modules() if isinstance(m, FactorizedLayer)]
    if reg == "fd":
        loss = loss + LAM / 2 * sum(m.reconstruct().pow(2).sum() for m in factorized)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()))
    factor_ids = {id(p) for m in factorized for p in m.factors()}
    out = {}
    for (name, p), g in zip(params.items(), grads):
        decayed = (p.ndim >= 2 and "bn" not in name and id(p) not in factor_ids) or (
            id(p) in factor_ids and reg == "wd")
        out[name] = p.detach() - LR * (g + (LAM * p.detach() if decayed else 0))
    if not trainer.reg_policy.rebalances:
        return out
    stepped = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in stepped.named_parameters():
            p.copy_(out[name])
        tdecomp.rebalance(stepped)
    return {name: p.detach() for name, p in stepped.named_parameters()}


@pytest.mark.parametrize("family", ["lowrank", "tucker"])
@pytest.mark.parametrize(("reg", "rebalance"), [("fd", None), ("fd", False), ("wd", None)])
def test_one_step_equals_sgd_on_the_regularized_objective(tmp_path, reg, rebalance, family):
    trainer, before, batch = _one_step(tmp_path, reg, family, rebalance)
    assert trainer.reg_policy.rebalances == (reg == "fd" and rebalance is None)
    expected = _expected(trainer, before, batch, reg)
    after = dict(trainer.model.named_parameters())
    assert set(after) == set(expected)
    for name, value in expected.items():
        moved = (value - dict(before.named_parameters())[name]).abs().max()
        assert torch.allclose(after[name], value, rtol=1e-4, atol=1e-6), name
        assert moved > 0, name
    # the regularizer's share of the step is far above the tolerance, so a wrong coefficient
    # (e.g. λ/4 instead of λ/2) fails above
    factors = [p for m in before.modules() if isinstance(m, FactorizedLayer) for p in m.factors()]
    reg_share = torch.autograd.grad(
        LAM / 2 * sum(m.reconstruct().pow(2).sum() for m in before.modules() if isinstance(m, FactorizedLayer))
        if reg == "fd" else LAM / 2 * sum(f.pow(2).sum() for f in factors), factors)
    assert max(float(LR * g.abs().max()) for g in reg_share) > 1e-4
