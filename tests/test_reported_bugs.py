"""Regression tests for bugs reported against tdecomp (issue 16): each failed before its fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp.layers.attention import ATTENTION_FAMILIES
from tdecomp.layers.lowrank import LowRankHeads


@pytest.mark.parametrize("call", [
    lambda: tdecomp.factorize_model(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)),
                                    "lowrank", 0.5, allocaton="energy"),  # misspelt keyword
    lambda: tdecomp.factorize(nn.Conv2d(4, 4, 3), "cp", 2, fixed_spatial=True),
    lambda: tdecomp.factorize(nn.Linear(4, 4), "tucker", 2, fixed_spatail=True),
])
def test_unknown_factorize_options_are_rejected(call):
    with pytest.raises(TypeError, match="unknown option"):
        call()


def test_known_factorize_options_still_work():
    layer = tdecomp.factorize(nn.Conv2d(4, 4, 3), "tucker", 2, fixed_spatial=False, implementation="factorized")
    assert layer.rank == (2, 2, 2, 2) and layer.implementation == "factorized"


def test_attention_rejects_options_instead_of_dropping_them():
    mha = nn.MultiheadAttention(8, 2)
    with pytest.raises(TypeError, match="attention takes no options.*implementation"):
        tdecomp.factorize(mha, "lowrank", 2, implementation="reconstructed")
    model = nn.Sequential(nn.Linear(8, 8))
    model.append(mha)
    with pytest.raises(TypeError, match="attention takes no options"):
        tdecomp.factorize_model(model, "lowrank", 2, skip=(), targets=("attention",), implementation="factorized")


class _NamedDifferently(LowRankHeads):
    """Per-head low rank whose factors are called A and B: attention must not assume ``U``."""

    family = "ab"

    def _build(self, rank, factory):
        (r,) = rank
        self.A = nn.Parameter(torch.empty(self.heads, self.m, r, **factory))
        self.B = nn.Parameter(torch.empty(self.heads, self.n, r, **factory))

    @property
    def rank(self):
        return (self.A.shape[-1],)

    def left(self):
        return self.A

    def right(self):
        return self.B

    def init_spectral(self, products):
        raise NotImplementedError  # the test initializes randomly

    @torch.no_grad()
    def init_random(self, std):
        self.A.normal_(0.0, std)
        self.B.normal_(0.0, std)


def test_attention_to_dense_works_for_a_head_family_without_U(monkeypatch):
    monkeypatch.setitem(ATTENTION_FAMILIES._entries, "ab", _NamedDifferently)
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    layer = tdecomp.factorize(mha, "ab", 4, init="random").eval()
    x = torch.randn(3, 5, 8)
    dense = layer.to_dense().eval()
    torch.testing.assert_close(dense(x, x, x)[0], layer(x, x, x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [nn.Linear(6, 4), tdecomp.factorize(nn.Linear(6, 4), "lowrank", 2)])
def test_dynamics_tracker_records_an_all_zero_weight(layer):
    from tdecomp.analysis.dynamics import DynamicsTracker

    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
    model = nn.Sequential(layer)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with DynamicsTracker(model, opt, every=1) as tracker:
        model(torch.randn(3, 6)).sum().backward()
        tracker.before_step()
        opt.step()
        tracker.step()
    start, after = (record["layers"]["0"] for record in tracker.records)
    assert start["norm"] == 0.0 and start["lr"] == 0.1
    assert "eta_over_norm" not in start and "angle_step" not in after  # undefined at ‖W‖ = 0


def test_model_kwargs_may_override_what_the_data_sets(tmp_path):
    from tdecomp.config import load_config
    from tdecomp.train.trainer import Trainer

    config = load_config(None, {"model": "cnn", "data": "digits", "model_kwargs": {"num_classes": 12},
                                "out": str(tmp_path), "progress": False})
    logits = Trainer(config).model(torch.zeros(2, 1, 8, 8))
    assert logits.shape == (2, 12)
