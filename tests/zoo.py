"""Tiny random-weight models researchers already use, built from configs (no hub downloads): timm's
resnet18, convnext_tiny, vit_tiny_patch16_224, efficientnet_b0 and transformers' BERT, GPT-2, Llama,
ViT, Whisper, T5, each with a matching input batch. A model whose package is missing skips its test,
saying which package (the ``test`` extra installs them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

VOCAB = 64


@dataclass(frozen=True)
class ZooModel:
    package: str  # what the model needs installed
    build: Callable[[], nn.Module]
    inputs: Callable[[], dict[str, Tensor] | Tensor]


def require(package: str) -> Any:
    """The package, or a skip that names it and the extra providing it."""
    return pytest.importorskip(package, reason=f"{package} is not installed (pip install -e '.[test]')")


def logits(model: nn.Module, inputs: dict[str, Tensor] | Tensor) -> Tensor:
    """The model's first output tensor: its logits (a timm model returns them, a transformers model in ``.logits``)."""
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out if isinstance(out, Tensor) else out.logits


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: require("timm").create_model(name, pretrained=False, num_classes=5, **kwargs)


def _efficientnet_b0() -> nn.Module:
    """efficientnet_b0's architecture at a quarter of its widths and depths (its registered builder fixes them)."""
    require("timm")
    from timm.models.efficientnet import _gen_efficientnet

    return _gen_efficientnet("efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.25, num_classes=5)


def _hf(model: str, config: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        transformers = require("transformers")
        transformers.logging.set_verbosity_error()
        return getattr(transformers, model)(getattr(transformers, config)(**kwargs))

    return build


def _ids(length: int = 7) -> Tensor:
    return torch.randint(1, VOCAB, (2, length))


def _images(size: int) -> Tensor:
    return torch.randn(2, 3, size, size)


_SMALL = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_WHISPER = dict(_SMALL, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
                max_source_positions=16, max_target_positions=16, decoder_start_token_id=1)

ZOO: dict[str, ZooModel] = {
    "resnet18": ZooModel("timm", _timm("resnet18", channels=(8, 16, 32, 64), stem_width=8), lambda: _images(32)),
    "convnext_tiny": ZooModel("timm", _timm("convnext_tiny", depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
                              lambda: _images(32)),
    "vit_tiny_patch16_224": ZooModel(
        "timm", _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
        lambda: _images(32)),
    "efficientnet_b0": ZooModel("timm", _efficientnet_b0, lambda: _images(32)),
    "bert": ZooModel("transformers", _hf(
        "BertForSequenceClassification", "BertConfig", **_SMALL, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=32, num_labels=3),
        lambda: {"input_ids": _ids()}),
    "gpt2": ZooModel("transformers", _hf(
        "GPT2LMHeadModel", "GPT2Config", **_SMALL, n_embd=32, n_layer=2, n_head=2, n_positions=32),
        lambda: {"input_ids": _ids()}),
    "llama": ZooModel("transformers", _hf(
        "LlamaForCausalLM", "LlamaConfig", **_SMALL, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32),
        lambda: {"input_ids": _ids()}),
    "vit": ZooModel("transformers", _hf(
        "ViTForImageClassification", "ViTConfig", image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=3),
        lambda: {"pixel_values": _images(16)}),
    "whisper": ZooModel("transformers", _hf("WhisperForConditionalGeneration", "WhisperConfig", **_WHISPER),
                        lambda: {"input_features": torch.randn(2, 8, 32), "decoder_input_ids": _ids(3)}),
    "t5": ZooModel("transformers", _hf(
        "T5ForConditionalGeneration", "T5Config", **_SMALL, d_model=32, d_kv=8, d_ff=64, num_layers=2,
        num_decoder_layers=2, num_heads=2, decoder_start_token_id=0),
        lambda: {"input_ids": _ids(), "decoder_input_ids": _ids(3)}),
}


def build(name: str) -> tuple[nn.Module, dict[str, Tensor] | Tensor]:
    """A fresh ``ZOO[name]`` model (eval mode) and an input batch; skips if its package is missing."""
    entry = ZOO[name]
    require(entry.package)
    return entry.build().eval(), entry.inputs()
