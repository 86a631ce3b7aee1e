"""Tied parameters stay dense and are counted once (issue 21 item 3); PEFT adapters are left alone and
frozen weights give frozen factors (item 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdecomp
from tests.helpers import FAMILIES
from tests.zoo import build, logits, require


def _held(model: nn.Module) -> int:
    """Brute force: every distinct parameter tensor once."""
    return sum({id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}.values())


class TiedLM(nn.Module):
    """An embedding whose table is also the output layer's weight, and a block reused twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.body = nn.Linear(16, 16)
        self.shared = nn.Linear(16, 16)
        self.again = self.shared  # the same module at two places
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.again(self.shared(torch.relu(self.body(self.embed(ids))))))


@pytest.mark.parametrize("family", FAMILIES)
def test_tied_layers_stay_dense_and_the_model_is_counted_once(family):
    model = TiedLM()
    before = _held(model)
    tdecomp.factorize_model(model, family, 2, skip=(), progress=False)
    assert isinstance(model.body, tdecomp.FactorizedLayer)
    assert type(model.head) is nn.Linear and model.head.weight is model.embed.weight
    assert type(model.shared) is nn.Linear and model.again is model.shared
    report = tdecomp.summarize(model)
    kept = {k.name: k for k in report.kept}
    assert kept["head"].reason == "tied" and "embed.weight" in kept["head"].detail
    assert kept["shared"].reason == "tied" and "again.weight" in kept["shared"].detail
    assert report.model_params == _held(model) < before and report.dense_model_params == before
    assert model(torch.randint(0, 50, (2, 5))).shape == (2, 5, 50)


def test_gpt2_keeps_its_tied_lm_head_dense_and_its_parameter_count_falls():
    model, inputs = build("gpt2")
    before = _held(model)
    tdecomp.factorize_model(model, "lowrank", 0.1, skip=(), progress=False)
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.transformer.wte.weight
    report = tdecomp.summarize(model)
    (head,) = [k for k in report.kept if k.name == "lm_head"]
    assert head.reason == "tied" and "transformer.wte.weight" in head.detail
    assert report.model_params == _held(model) < before
    assert report.model_ratio == pytest.approx(_held(model) / before)
    logits(model, inputs).sum().backward()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("module", [nn.Linear(12, 10), nn.Conv2d(6, 8, 3)], ids=["linear", "conv"])
def test_frozen_weights_give_frozen_factors(family, module):
    module.requires_grad_(False)
    layer = tdecomp.factorize(module, family, 0.5)
    assert not any(p.requires_grad for p in layer.parameters())
    module.bias.requires_grad_(True)  # BitFit: only the biases train
    layer = tdecomp.factorize(module, family, 0.5)
    assert layer.bias.requires_grad and not any(f.requires_grad for f in layer.factors())
    assert all(f.requires_grad for f in tdecomp.factorize(module.requires_grad_(True), family, 0.5).factors())


def _trainable(model: nn.Module) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def test_a_lora_model_keeps_its_adapters_and_base_layers_and_stays_frozen():
    peft = require("peft")
    model, inputs = build("bert")
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["query", "value"]))
    trainable, total = _trainable(lora), _held(lora)
    tdecomp.factorize_model(lora, "lowrank", 0.3, progress=False)
    report = tdecomp.summarize(lora)
    wrapped = [n.removesuffix(".base_layer") for n, _ in lora.named_modules() if n.endswith(".base_layer")]
    assert len(wrapped) == 4
    for name in wrapped:  # PEFT's layers are untouched, their parts kept dense as "peft"
        for part in ("base_layer", "lora_A.default", "lora_B.default"):
            assert type(lora.get_submodule(f"{name}.{part}")) is nn.Linear
            assert any(k.name == f"{name}.{part}" and k.reason == "peft" for k in report.kept)
    key = lora.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.key")
    assert isinstance(key, tdecomp.FactorizedLayer) and not any(p.requires_grad for p in key.parameters())
    assert _trainable(lora) == trainable and _held(lora) < total
    logits(lora, inputs).sum().backward()
    assert all(p.grad is None for n, p in lora.named_parameters() if n not in trainable)
