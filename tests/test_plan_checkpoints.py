"""Rebuildable checkpoints: the per-layer plan travels with the weights; tdecomp.save/load and
factorize_model(plan=…) rebuild any factorized model from its checkpoint alone (issue 21 item 7)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp.cli import main
from tdecomp.config import load_config
from tdecomp.plan import LayerPlan, plan_of
from tdecomp.train import train
from tests.helpers import FAMILIES, TinyResNet, TinyTransformerMLP
from tests.zoo import build, logits


def _trained_like(model: nn.Module) -> nn.Module:
    """Weights with decaying spectra, so that energy allocation gives every layer its own ranks."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(torch.logspace(0, -2, m.weight.shape[0]).reshape(-1, *(1,) * (m.weight.ndim - 1)))
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_an_energy_allocated_model_reloads_from_its_checkpoint_alone(family, tmp_path):
    model = _trained_like(TinyResNet()).eval()
    tdecomp.factorize_model(model, family, 0.3, allocation="energy", progress=False)
    x = torch.randn(2, 3, 16, 16)
    tdecomp.save(model, tmp_path / "model.pt")
    rebuilt = tdecomp.load(tmp_path / "model.pt", TinyResNet).eval()
    assert plan_of(rebuilt) == plan_of(model)
    assert torch.equal(rebuilt(x), model(x))


def test_every_kind_of_replacement_is_in_the_plan(tmp_path):
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(30, 16)
            self.attn = nn.MultiheadAttention(16, 2)
            self.conv = nn.Conv1d(16, 16, 3, padding=1)
            self.mlp = TinyTransformerMLP(d=16, hidden=32, depth=1)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            h = self.embed(ids)
            h = h + self.attn(h, h, h, need_weights=False)[0]
            h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
            return h

    model = Mixed().eval()
    tdecomp.factorize_model(model, "lowrank", 4, targets=("embedding",), skip=(), progress=False)
    tdecomp.factorize_model(model, "tucker", (4, 4), targets=("attention",), skip=(), progress=False)
    tdecomp.factorize_model(model, "tt", 0.3, targets=("conv",), separable=True, skip=(), progress=False)
    tdecomp.factorize_model(model, "lowrank", 3, overcomplete="wide", targets=("linear",), progress=False)
    plan = plan_of(model)
    assert plan["embed"] == LayerPlan("lowrank", (4,), "embedding", {"overcomplete": "balanced", "rank_rule": "min"})
    assert plan["attn"].kind == "attention" and plan["attn"].family == "tucker"
    assert plan["conv"].separable and plan["conv"].kind == "conv1d"
    assert plan["mlp.blocks.0.1"].options["overcomplete"] == "wide"
    tdecomp.save(model, tmp_path / "mixed.pt")
    rebuilt = tdecomp.load(tmp_path / "mixed.pt", Mixed).eval()
    ids = torch.randint(0, 30, (5, 2))
    assert plan_of(rebuilt) == plan and torch.equal(rebuilt(ids), model(ids))


def test_plan_errors_name_the_fix(tmp_path):
    model = tdecomp.factorize_model(TinyResNet(), "cp", 0.3, progress=False)
    with pytest.raises(TypeError, match="either plan= or family and rank"):
        tdecomp.factorize_model(TinyResNet(), "cp", 0.3, plan=plan_of(model))
    with pytest.raises(TypeError, match="needs family and rank"):
        tdecomp.factorize_model(TinyResNet())
    with pytest.raises(ValueError, match="does not have.*'layers.9.conv1'"):
        tdecomp.factorize_model(TinyResNet(), plan={"layers.9.conv1": LayerPlan("cp", (3,), "conv2d")})
    with pytest.raises(ValueError, match="replaces fc as a conv2d layer, but the model holds a linear"):
        tdecomp.factorize_model(TinyResNet(), plan={"fc": LayerPlan("cp", (3,), "conv2d")})
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="holds no plan"):
        tdecomp.load(tmp_path / "plain.pt", TinyResNet)


def test_the_trainers_checkpoint_rebuilds_the_model(tmp_path):
    config = dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=128, batch_size=64, epochs=1,
                  family="tt", rank=0.3, progress=False, out=str(tmp_path / "run"))
    train(load_config(None, config))
    model = tdecomp.load(tmp_path / "run", lambda: tdecomp.models.create("cnn", width=0.5, num_classes=10,
                                                                        in_channels=1)).eval()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert plan_of(model) == {n: LayerPlan.from_dict(p) for n, p in state["plan"]["layers"].items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in state["model"].items()}
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_compress_output_loads_with_its_energy_ranks(tmp_path):
    fast = dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=128, batch_size=64, epochs=1,
                progress=False)
    train(load_config(None, {**fast, "family": "dense", "out": str(tmp_path / "dense")}))
    out = tmp_path / "compressed"
    assert main(["compress", str(tmp_path / "dense"), "family=tucker", "rank=0.3", "allocation=energy",
                 f"out={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    model = tdecomp.load(out, lambda: tdecomp.models.create("cnn", width=0.5, num_classes=10, in_channels=1))
    assert {n: list(p.rank) for n, p in plan_of(model).items()} == {r["name"]: r["rank"] for r in summary["layers"]}


def test_save_pretrained_alone_reloads_dense_layers_as_the_readme_says(tmp_path):
    model, inputs = build("gpt2")
    tdecomp.factorize_model(model, "lowrank", 0.25, progress=False)
    model.save_pretrained(tmp_path)
    back = type(model).from_pretrained(tmp_path).eval()
    assert type(back.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # the dense class's own layers …
    with torch.no_grad():
        assert not torch.allclose(logits(back, inputs), logits(model, inputs))  # … freshly initialized
