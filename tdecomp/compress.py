"""Compress a trained dense model: factorize it with SI, evaluate, fine-tune, report.

:func:`compress` runs the usual :class:`~tdecomp.train.Trainer` on a config whose ``init_from``
names the trained weights (loaded before ``factorize_model`` applies spectral initialization to
them) and whose ``epochs`` are the fine-tuning epochs. The run folder's ``summary.json`` then
adds to the trainer's (``test_acc``, ``train_acc``, ``params``, ``param_ratio``, ``flops``,
``flop_ratio``, ``decay_integral``, provenance, …; :mod:`tdecomp.train.trainer`):

- ``test_acc_before_finetune`` (and the other ``test_*`` metrics, and with a validation split the
  ``val_*`` ones, suffixed likewise): the factorized model right after SI of the trained weights;
- ``finetune_epochs``, ``source``;
- ``layers``: per factorized layer ``name``, ``family``, ``rank``, ``params``, ``dense_params``
  and ``reconstruction_error`` ‖W − Ŵ‖_F/‖W‖_F of the trained weight W by its factorization Ŵ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from .config import TrainConfig
from .layers.base import FactorizedLayer
from .layers.registry import available_families
from .run_files import CONFIG
from .surgery import summarize
from .train.checkpoint import load_model_weights
from .train.trainer import Trainer

BEFORE = "_before_finetune"


def source_config(source: Path | str, overrides: dict[str, Any]) -> TrainConfig:
    """The fine-tuning config for compressing ``source``: a run folder's ``config.yaml`` (a dense
    run) updated by ``overrides``, or, for a checkpoint file, defaults updated by ``overrides``
    (which must then name the ``model`` and its ``data``)."""
    source = Path(source)
    if source.is_dir():
        saved_path = source / CONFIG
        if not saved_path.is_file():
            raise FileNotFoundError(f"{source} is not a run folder (no {CONFIG}); pass a run folder or a "
                                    "checkpoint file with model=NAME")
        values = yaml.safe_load(saved_path.read_text())
        if values.get("family", "dense") != "dense":
            raise ValueError(f"{source} holds a {values['family']} run; compress starts from a dense run "
                             "(family=dense)")
        values = {k: v for k, v in values.items() if k not in ("out", "resume", "init_from")}
    elif source.is_file():
        if "model" not in overrides:
            raise ValueError(f"{source} is a checkpoint file: also pass model=NAME (and data=NAME) to rebuild it")
        values = {}
    else:
        raise FileNotFoundError(f"compress source {source} does not exist; pass a run folder or a checkpoint file")
    return TrainConfig.from_dict({**values, "init_from": str(source), **overrides})


@torch.no_grad()
def reconstruction_errors(model: torch.nn.Module, dense_state: dict[str, torch.Tensor]) -> dict[str, float]:
    """‖W − Ŵ‖_F/‖W‖_F per factorized layer of ``model``, W = ``dense_state[name + ".weight"]``."""
    errors = {}
    for name, layer in model.named_modules():
        if isinstance(layer, FactorizedLayer):
            weight = dense_state[f"{name}.weight"].to(layer.reconstruct().device, torch.float64)
            error = (layer.reconstruct().double() - weight).norm() / weight.norm().clamp_min(1e-300)
            errors[name] = float(error)
    return errors


def compress(config: TrainConfig) -> dict[str, Any]:
    """Factorize ``config.init_from``'s trained model (``config.family``/``rank``/``allocation``, SI),
    evaluate it, fine-tune it for ``config.epochs`` epochs and return the extended summary."""
    if config.family == "dense":
        raise ValueError(f"compress needs a factorized family ({', '.join(available_families())}), not dense")
    if config.init != "spectral":
        raise ValueError(f"compress factorizes trained weights by SI: init must be 'spectral', not {config.init!r}")
    trainer = Trainer(config)
    before = trainer.evaluate()
    errors = reconstruction_errors(trainer.model, load_model_weights(config.init_from))
    layers = [
        {"name": r.name, "family": r.family, "rank": list(r.rank), "params": r.params,
         "dense_params": r.dense_params, "reconstruction_error": errors.get(r.name)}
        for r in summarize(trainer.model).layers
    ]
    trainer.summary_fields.update(
        {f"{k}{BEFORE}": v for k, v in before.items()},
        finetune_epochs=config.epochs, source=config.init_from, allocation=config.allocation, layers=layers,
    )
    return trainer.fit()


__all__ = ["compress", "reconstruction_errors", "source_config"]
