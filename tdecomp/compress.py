"""Compress a trained dense model: factorize it with SI, evaluate, fine-tune, report.

:func:`compress` runs the usual :class:`~tdecomp.train.Trainer` on a config whose ``init_from``
names the trained weights (loaded before ``factorize_model`` applies spectral initialization to
them) and whose ``epochs`` are the fine-tuning epochs. ``init=whitened`` and the allocations
``whitened-energy``/``fisher`` calibrate on ``calibration_batches`` training batches first
(:mod:`tdecomp.train.calibration`); ``distill=T`` fine-tunes with the dense source as teacher
(:mod:`tdecomp.train.distill`). The run folder's ``summary.json`` then adds to the trainer's
(``test_acc``, ``train_acc``, ``params``, ``param_ratio``, ``flops``, ``flop_ratio``,
``decay_integral``, provenance, …; :mod:`tdecomp.train.trainer`):

- ``test_acc_before_finetune`` (and the other ``test_*`` metrics, and with a validation split the
  ``val_*`` ones, suffixed likewise): the factorized model right after SI of the trained weights;
- ``finetune_epochs``, ``source``, ``allocation``, ``calibration_batches``, ``distill``,
  ``distill_weight``;
- ``layers``: per factorized layer ``name``, ``family``, ``rank``, ``params``, ``dense_params``,
  ``reconstruction_error`` ‖W − Ŵ‖_F/‖W‖_F of the trained weight W by its factorization Ŵ, and
  ``output_error`` ‖(W − Ŵ)X‖_F/‖WX‖_F over the inputs X the layer sees in the dense model on the
  held-out calibration batches (the ``calibration_batches`` after those calibrated on, whatever the
  init, so plain and whitened SI are measured alike; null if the training split has no batch left).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import yaml_values
from .config import TrainConfig
from .init import DATA_INITS
from .layers.base import FactorizedLayer
from .layers.registry import available_families
from .layers.spec import CONV_TYPES
from .layers.whitening import LayerStats
from .run_files import CONFIG
from .surgery import summarize
from .train.calibration import calibration_batches, task_calibration
from .train.source import source_model
from .train.trainer import Trainer

BEFORE = "_before_finetune"
COMPRESS_INITS = ("spectral", *DATA_INITS)  # the inits that decompose the trained weights


def run_label(family: str, allocation: str, rank: float | str, init: str = "spectral", distill: float = 0.0) -> str:
    """``FAMILY-ALLOCATION-RANK``, then ``-INIT`` for an init other than spectral and ``-distillT`` with
    distillation: what a compressed run is named after (``tdecomp compress``'s default ``out``, the grid)."""
    return f"{family}-{allocation}-{rank}" + ("" if init == "spectral" else f"-{init}") + (
        f"-distill{float(distill):g}" if float(distill) else "")


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
        values = yaml_values.load(saved_path.read_text())
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
    for name, layer in _factorized_layers(model):
        weight = dense_state[f"{name}.weight"].to(layer.reconstruct().device, torch.float64)
        error = (layer.reconstruct().double() - weight).norm() / weight.norm().clamp_min(1e-300)
        errors[name] = float(error)
    return errors


@torch.no_grad()
def output_errors(
    model: torch.nn.Module, dense_state: dict[str, torch.Tensor], stats: dict[str, LayerStats]
) -> dict[str, float]:
    """‖(W − Ŵ)X‖_F/‖WX‖_F per factorized layer of ``model`` that ``stats`` saw: X the inputs the dense
    layer (weight W = ``dense_state[name + ".weight"]``) multiplied, Ŵ its factorization
    (:meth:`~tdecomp.layers.whitening.LayerStats.output_error`)."""
    return {name: stats[name].output_error(dense_state[f"{name}.weight"], layer.reconstruct())
            for name, layer in _factorized_layers(model) if name in stats}


def _factorized_layers(model: torch.nn.Module) -> list[tuple[str, FactorizedLayer]]:
    return [(name, layer) for name, layer in model.named_modules() if isinstance(layer, FactorizedLayer)]


def compress(config: TrainConfig) -> dict[str, Any]:
    """Factorize ``config.init_from``'s trained model (``config.family``/``rank``/``allocation``, SI),
    evaluate it, fine-tune it for ``config.epochs`` epochs and return the extended summary."""
    if config.family == "dense":
        raise ValueError(f"compress needs a factorized family ({', '.join(available_families())}), not dense")
    if config.init not in COMPRESS_INITS:
        raise ValueError(f"compress factorizes trained weights by SI: init must be one of {COMPRESS_INITS}, "
                         f"not {config.init!r}")
    trainer = Trainer(config)
    before = trainer.evaluate()
    dense = source_model(config, trainer.data.model_kwargs, trainer.device)
    dense_state = dense.state_dict()
    originals = dict(dense.named_modules())  # the dense layers the factorized ones replace
    replaced = [name for name, _ in _factorized_layers(trainer.model)
                if isinstance(originals.get(name), (torch.nn.Linear, *CONV_TYPES))]
    batches = calibration_batches(trainer.data, config)[1]  # none if the calibration took every training batch
    held_out = task_calibration(dense, trainer.data.task, batches, frozenset(), replaced) if batches else {}
    errors = reconstruction_errors(trainer.model, dense_state)
    outputs = output_errors(trainer.model, dense_state, held_out)
    layers = [
        {"name": r.name, "family": r.family, "rank": list(r.rank), "params": r.params,
         "dense_params": r.dense_params, "reconstruction_error": errors.get(r.name),
         "output_error": outputs.get(r.name)}
        for r in summarize(trainer.model).layers
    ]
    del dense, dense_state, held_out
    trainer.summary_fields.update(
        {f"{k}{BEFORE}": v for k, v in before.items()},
        finetune_epochs=config.epochs, source=config.init_from, allocation=config.allocation,
        calibration_batches=config.calibration_batches, distill=config.distill, distill_weight=config.distill_weight,
        layers=layers,
    )
    return trainer.fit()


__all__ = ["compress", "output_errors", "reconstruction_errors", "run_label", "source_config"]
