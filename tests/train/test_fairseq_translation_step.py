"""The trainer applies FD as the fairseq fork does: on a ``family=dense`` model that is built with
factorized attention products, and only on the products ``fd_skip`` does not name (microsoft/fnl_paper
Transformer-PyTorch/singleprocess_train.py:117-125, frob.py:51-63): one SGD step equals SGD on
loss + λ/2·Σ_h ‖W_O^h W_V^hᵀ‖²_F of the materialized OVᵀ products, QKᵀ products undecayed."""

from __future__ import annotations

import copy

import torch

from tdecomp.config import load_config
from tdecomp.layers.attention.reduced import HeadReducedAttention
from tdecomp.train import Trainer

LR, LAM = 0.1, 0.05


def test_one_step_decays_only_the_products_not_skipped(tmp_path):
    cfg = load_config(None, dict(
        model="transformer_small_fairseq", data="translation_toy", subset=16, batch_size=16, epochs=1,
        model_kwargs=dict(d_model=16, heads=2, ffn_dim=32, max_positions=64, dropout=0.0, relu_dropout=0.0,
                          rank_scale=0.5),
        data_kwargs=dict(n_train=16, n_test=8), family="dense", reg="fd", fd_coef=LAM, fd_skip=["quekey"],
        weight_decay=0.0, optimizer="sgd", momentum=0.0, lr=LR, schedule="constant", progress=False,
        out=str(tmp_path / "run")))
    trainer = Trainer(cfg)
    before = copy.deepcopy(trainer.model)
    trainer.sampler.set_epoch(0)
    (batch,) = list(trainer._batches(trainer.train_loader))
    trainer._train_epoch(0)

    loss, _ = trainer.task.training_step(before, batch)
    attention = [m for m in before.modules() if isinstance(m, HeadReducedAttention)]
    loss = loss + LAM / 2 * sum((a.outval.pairs.U @ a.outval.pairs.V.mT).pow(2).sum() for a in attention)
    params = dict(before.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(p.detach(), params[name].detach() - LR * grads[name], rtol=1e-5, atol=1e-6,
                                   msg=name)
