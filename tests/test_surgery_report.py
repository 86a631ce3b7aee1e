"""The surgery report: what was factorized, what was kept dense and why, warnings for what a user might
not expect, the output layer the default rule keeps, numpy/tensor ranks (issue 21 item 9)."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import tdecomp
from tests.helpers import TinyResNet
from tests.zoo import build


def _kept(model: nn.Module) -> dict[str, tuple[str, str]]:
    return {k.name: (k.reason, k.detail) for k in tdecomp.summarize(model).kept}


@pytest.mark.parametrize("name, output", [("bert", "classifier"), ("vit", "classifier"), ("llama", "lm_head"),
                                          ("resnet18", "fc"), ("convnext_tiny", "head.fc")])
def test_the_default_rule_keeps_the_layer_producing_the_output_and_names_it(name, output):
    model, _ = build(name)
    tdecomp.factorize_model(model, "lowrank", 0.3, progress=False)
    kept = _kept(model)
    outputs = [n for n, (reason, detail) in kept.items() if "output layer" in detail]
    assert outputs == [output] and "found by a forward pass on the meta device" in kept[output][1]


@pytest.mark.parametrize("model_class, config_name, last_linear", [
    ("BertModel", "bert", "pooler.dense"), ("WhisperModel", "whisper", "decoder.layers.1.fc2")])
def test_a_backbone_without_an_output_layer_keeps_no_linear_dense(model_class, config_name, last_linear):
    """The last-registered Linear (the old rule's pick) is not the output: BertModel returns the encoder's
    states, WhisperModel the decoder's; both are factorized."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    head, _ = build(config_name)
    model = getattr(transformers, model_class)(head.config)
    tdecomp.factorize_model(model, "lowrank", 0.3, progress=False)
    assert isinstance(model.get_submodule(last_linear), tdecomp.FactorizedLayer)
    assert not any("output layer" in detail for _, detail in _kept(model).values())


def test_an_example_input_finds_the_output_layer_of_any_model():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, 3)  # the output, registered before …
            self.body = nn.Linear(8, 16)
            self.aux = nn.Linear(16, 16)  # … the last Linear, which only feeds a regularizer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.body(x)))

    model = tdecomp.factorize_model(Net(), "lowrank", 2, example_input=torch.randn(2, 8), progress=False)
    assert type(model.head) is nn.Linear and isinstance(model.aux, tdecomp.FactorizedLayer)
    guessed = tdecomp.factorize_model(Net(), "lowrank", 2, progress=False)  # no input: the heuristic
    assert type(guessed.aux) is nn.Linear and "heuristic" in _kept(guessed)["aux"][1]


def test_surprises_are_kept_dense_reported_and_warned(caplog):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=4), parametrizations.weight_norm(nn.Conv2d(8, 8, 3)),
        torch.nn.utils.spectral_norm(nn.Conv2d(8, 8, 3)), nn.ConvTranspose2d(8, 8, 3), nn.Conv2d(8, 8, 3),
        nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 4))
    with caplog.at_level(logging.INFO, logger="tdecomp"):
        tdecomp.factorize_model(model, "tucker", 2, progress=False)
    assert [type(m).__name__ for m in model] == [
        "Conv2d", "Conv2d", "ParametrizedConv2d", "Conv2d", "ConvTranspose2d", "TuckerLayer", "Flatten",
        "TuckerLayer", "Linear"]
    assert _kept(model) == {
        "0": ("skip rule", "default rule: the first conv"),
        "1": ("grouped conv", "groups=4"),
        "2": ("parametrization", "its weight is computed by a parametrization"),
        "3": ("parametrization", "its weight is computed by a parametrization"),
        "4": ("unsupported type", ""),
        "8": ("skip rule", "default rule: the output layer (heuristic: the last nn.Linear)"),
    }
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for what in ("grouped conv", "parametrization", "unsupported type"):
        assert f"left dense ({what})" in warned
    table = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert "surgery report" in table and "ConvTranspose2d: unsupported type" in table


@pytest.mark.parametrize("rank, same_as", [(np.float32(0.25), 0.25), (torch.tensor(0.25), 0.25),
                                           (np.int64(3), 3), (torch.tensor(3), 3)])
def test_numpy_and_tensor_ranks_count_as_numbers(rank, same_as):
    for family in ("lowrank", "cp"):
        conv = nn.Conv2d(8, 8, 3)
        assert tdecomp.factorize(conv, family, rank).rank == tdecomp.factorize(conv, family, same_as).rank
    a = tdecomp.factorize_model(TinyResNet(), "tt", rank, progress=False)
    b = tdecomp.factorize_model(TinyResNet(), "tt", same_as, progress=False)
    assert [r.rank for r in tdecomp.summarize(a).layers] == [r.rank for r in tdecomp.summarize(b).layers]
    assert tdecomp.factorize(nn.Conv2d(8, 8, 3), "tucker", (np.int64(3), 3, np.int32(3), 3)).rank == (3, 3, 3, 3)


def test_the_report_counts_the_whole_model_once():
    model = TinyResNet()
    dense = sum(p.numel() for p in model.parameters())
    tdecomp.factorize_model(model, "cp", 0.25, progress=False)
    report = tdecomp.summarize(model)
    assert report.dense_model_params == dense and report.model_params == sum(p.numel() for p in model.parameters())
    assert f"the model holds {report.model_params:,} parameters" in report.headline()
    assert {k.name for k in report.kept} == {"stem", "fc"}


def test_tdecomp_train_prints_the_report(tmp_path):
    command = ["train", "model=cnn", "model_kwargs.width=0.5", "data=digits", "subset=128", "batch_size=64",
               "epochs=1", "family=lowrank", "rank=0.3", "progress=false", f"out={tmp_path / 'run'}"]
    result = subprocess.run([sys.executable, "-m", "tdecomp.cli", *command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "surgery report" in result.stdout and "default rule: the first conv" in result.stdout
    assert "factorized layers hold" in result.stdout
