"""The layer whose output is the model's output: the one the default skip rule keeps dense.

Found by one forward pass on the meta device (no memory and no arithmetic: every parameter and
buffer is swapped for a meta tensor by :func:`torch.func.functional_call`; the model is not touched)
on an example input, with forward hooks on the candidate layers: the candidate whose output tensor
*is* the model's output (its first tensor: a classifier's or a language-model head's logits) is the
output layer; when none is (a backbone such as ``BertModel`` or ``WhisperModel``), there is none.
The example input is ``example_input`` when given (a tensor, a tuple of positional arguments or a
dict of keyword arguments, on any device), else built from the model's own description:

- Hugging Face models, by ``main_input_name``: ``input_ids`` (1, 8) zeros; ``pixel_values``
  (1, num_channels, image_size, image_size) from the config; ``input_features`` (1, num_mel_bins,
  2·max_source_positions) (Whisper); an encoder-decoder also gets ``decoder_input_ids`` (1, 1);
- timm models: (1, *pretrained_cfg["input_size"]).

Without an example input, or when the meta forward fails (control flow on tensor values cannot run
on meta tensors), the heuristic: the last ``nn.Linear`` in registration order (the classifier of
most vision models, the paper's rule).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger("tdecomp")

ExampleInput = Tensor | tuple | dict[str, Any]
FOUND, GUESSED = "found by a forward pass on the meta device", "heuristic: the last nn.Linear"
TOKENS = 8  # length of a built token-id input


def find_output_layer(
    model: nn.Module, candidates: Collection[str], example_input: ExampleInput | None = None
) -> tuple[str | None, str]:
    """``(name, how)``: the candidate (qualified names in ``model``) producing the model's output, or
    ``None``, and how it was found (:data:`FOUND` or :data:`GUESSED`); see the module docstring."""
    example = example_input if example_input is not None else built_input(model)
    if example is not None:
        try:
            return _by_meta_forward(model, set(candidates), example), FOUND
        except Exception as err:  # any model code that needs tensor values; the heuristic takes over
            log.info("tdecomp: the forward pass on the meta device that finds the output layer failed "
                     "(%s: %s); keeping the last nn.Linear dense instead", type(err).__name__, err)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return (linears[-1] if linears else None), GUESSED


def built_input(model: nn.Module) -> dict[str, Tensor] | tuple[Tensor] | None:
    """An example input from the model's own description (module docstring), or ``None``."""
    config, name = getattr(model, "config", None), getattr(model, "main_input_name", None)
    inputs: dict[str, Tensor] = {}
    if name == "input_ids":
        inputs[name] = torch.zeros(1, TOKENS, dtype=torch.long)
    elif name == "pixel_values" and hasattr(config, "image_size"):
        size = config.image_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        inputs[name] = torch.zeros(1, getattr(config, "num_channels", 3), *size)
    elif name == "input_features" and hasattr(config, "num_mel_bins") and hasattr(config, "max_source_positions"):
        inputs[name] = torch.zeros(1, config.num_mel_bins, 2 * config.max_source_positions)
    if inputs:
        if getattr(config, "is_encoder_decoder", False):
            inputs["decoder_input_ids"] = torch.zeros(1, 1, dtype=torch.long)
        return inputs
    pretrained = getattr(model, "pretrained_cfg", None)
    if isinstance(pretrained, Mapping) and "input_size" in pretrained:
        return (torch.zeros(1, *pretrained["input_size"]),)
    return None


def _by_meta_forward(model: nn.Module, candidates: set[str], example: ExampleInput) -> str | None:
    outputs: dict[str, Any] = {}
    hooks = [module.register_forward_hook(lambda _, __, out, name=name: outputs.setdefault(name, out))
             for name, module in model.named_modules() if name in candidates]
    state = {name: torch.empty_like(t, device="meta")
             for named in (model.named_parameters(), model.named_buffers()) for name, t in named}
    args, kwargs = ((), example) if isinstance(example, Mapping) else (
        (example if isinstance(example, tuple) else (example,)), {})
    try:
        with torch.no_grad():
            result = torch.func.functional_call(model, state, _to_meta(args), _to_meta(kwargs), strict=False)
    finally:
        for hook in hooks:
            hook.remove()
    first = _first_tensor(result)
    return next((name for name, out in outputs.items() if out is first), None)


def _to_meta(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.to("meta")
    if isinstance(value, Mapping):
        return {k: _to_meta(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_meta(v) for v in value)
    return value


def _first_tensor(value: Any) -> Tensor | None:
    """The first tensor of a model's output: itself, or the first of a tuple, list or mapping (HF outputs)."""
    if isinstance(value, Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    return next((t for t in map(_first_tensor, items) if t is not None), None)
