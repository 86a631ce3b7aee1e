"""The training loop: any model × any family × SI/random init × FD/WD, CPU or GPU, resumable.

Two ways in: ``Trainer(config)`` builds the data, model and loaders from the config's registry
names (``model``, ``data``, ``batch_size``, …); :meth:`Trainer.from_objects` (or :func:`fit`) takes a
user's own ``nn.Module``, ``DataLoader``s and :class:`~tdecomp.tasks.Task`. Everything after that —
factorization (``family``, ``rank``, …), FD, rebalancing, callbacks, checkpoints, resume, summary,
provenance — is the same code for both.

Files written to ``config.out`` (main process only):

- ``config.yaml`` — the full configuration;
- ``metrics.jsonl`` — one record per epoch: ``epoch`` (1-based), ``step``, ``lr``, ``decay_integral``
  (so far), ``train_loss``, ``train_acc``, with ``val_fraction`` > 0 ``val_loss``, ``val_acc`` (+ task
  metrics, ``val_`` prefix), ``test_loss``, ``test_acc`` (+ task metrics such as ``test_bleu``),
  ``time_s``;
- ``last.pt`` / ``previous.pt`` — atomic checkpoints (model, optimizer, scheduler, scaler, RNG,
  callbacks, Σ lr), written every epoch; ``resume=true`` continues from ``last.pt``;
- ``summary.json`` — the last epoch's ``test_*``, ``val_*``, ``train_loss`` and ``train_acc``;
  ``best_val_acc`` and ``best_val_epoch`` (with a validation split; nothing is selected on test);
  ``decay_integral``; ``params``, ``trained_params``, ``dense_params``, ``param_ratio``,
  ``factorized_layer_ratio``, ``flops`` (forward FLOPs per example,
  :func:`tdecomp.flops.flop_summary`), ``flop_ratio``, …; ``epochs``, ``steps``, ``time_s``; the
  config's ``model``, ``data`` (for objects given to the trainer: the classes of the model and of
  the training dataset), ``family``, ``rank``, ``init``, ``reg``, ``seed``; ``implementations``: the
  implementation each factorized layer chose (:func:`~tdecomp.layers.execution.chosen_implementations`);
  any :attr:`Trainer.summary_fields` a caller added (e.g. ``tdecomp compress``); and provenance
  (:mod:`tdecomp.train.provenance`): ``code`` (version, git commit, dirty flag), ``versions``
  (python, torch, tensorly, tensorly-torch, numpy), ``device``, ``threads``, ``world_size``, and
  ``earlier_code`` when a resumed run was trained by other code before.

Regularization (``reg``, :class:`tdecomp.reg_policy.RegPolicy`): ``fd`` adds λ/2·Σ‖W‖²_F of the
factorized products to the loss and gives factors no plain weight decay, and (``rebalance``,
default on under ``fd``) equalizes factor norms after each step with :func:`tdecomp.rebalance`, a
no-op on W; ``wd`` puts plain weight decay on the factors (the baseline the paper criticizes);
``crs`` weight decay scaled by the model's parameter ratio; ``none`` neither. Dense weights keep
plain weight decay in every case. ``decay_integral`` = λ·Σ_t η_t over the optimizer steps taken,
η_t the learning rate of step t and λ the decay strength on the factorized weights
(:meth:`~tdecomp.reg_policy.RegPolicy.decay_coefficient`): how far decay has shrunk them (the
paper's CIFAR recipe: ≈ 0.41).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .. import data as datasets
from .. import models, yaml_values
from .._svd import si_solver
from ..calibration import data_needs
from ..config import TrainConfig
from ..data.token_batches import TokenBatchSampler
from ..flops import flop_summary
from ..layers.execution import chosen_implementations
from ..reg_policy import RegPolicy
from ..regularize import rebalance
from ..run_files import CONFIG, METRICS, SUMMARY
from ..saving import checkpoint_entries
from ..surgery import factorize_model, summarize
from ..tasks import ClassificationTask, Task
from .calibration import config_calibration
from .callbacks import Callback, StepInfo, TrainingState
from .checkpoint import (
    LAST,
    load_checkpoint,
    load_model_weights,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .config_callbacks import config_callbacks
from .distill import distillation_task
from .distributed import barrier, init_distributed
from .objects import dense_parameter_count, epoch_sampler, objects_config
from .provenance import code_version, provenance
from .schedule import lr_multiplier

log = logging.getLogger("tdecomp.train")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`; the message names the last epoch a resume continues after."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available; use device=cpu or auto")
    return device


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) tuples, lists and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _write_json_atomic(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


class Trainer:
    """Trains a model (factorized per ``config.family``) with the config's optimizer and schedule.

    ``Trainer(config)`` builds data, model and loaders from the config's registry names;
    :meth:`from_objects` takes your own. Callbacks see the run through :attr:`state`
    (:class:`~tdecomp.train.callbacks.TrainingState`, the callback contract). Public attributes:
    ``config``, ``model`` (unwrapped), ``task``, ``optimizer``, ``scheduler``, ``out_dir``,
    ``device``, ``epoch``, ``global_step``, ``is_main``, ``steps_per_epoch``, ``total_steps``,
    ``total_epochs``, the loaders, ``reg_policy`` (:class:`~tdecomp.reg_policy.RegPolicy`),
    ``decay_integral`` (so far) and :attr:`summary_fields`; :meth:`evaluate` evaluates the model.

    Length of training: ``epochs`` epochs, or with ``max_steps`` > 0 whichever comes first of
    ``max_steps`` optimizer steps and ``epochs`` epochs, i.e. ``total_steps = min(max_steps,
    epochs·steps_per_epoch)`` steps in ``total_epochs = ⌈total_steps / steps_per_epoch⌉`` epochs, the
    last one cut short (fairseq ``--max-update``: microsoft/fnl_paper
    Transformer-PyTorch/singleprocess_train.py:220,305-306). A cut epoch ends like a whole one.
    """

    def __init__(self, config: TrainConfig, callbacks: Sequence[Callback] = ()) -> None:
        if config.model is None or config.data is None:
            raise ValueError("model=null/data=null name no registered model or dataset: pass model=NAME and "
                             "data=NAME, or give your own objects to tdecomp.fit / Trainer.from_objects")
        self._begin(config)
        self.data = self._build_data()
        model = models.create(config.model, **{**self.data.model_kwargs, **config.model_kwargs})  # config wins
        train_loader, val_loader, test_loader = self._build_loaders()
        task = distillation_task(self.data.task, config, self.data.model_kwargs, self.device)
        self._assemble(model, train_loader, val_loader, test_loader, task, callbacks)

    @classmethod
    def from_objects(
        cls,
        model: nn.Module,
        train_loader: DataLoader,
        test_loader: DataLoader,
        val_loader: DataLoader | None = None,
        *,
        task: Task | None = None,
        config: TrainConfig | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> Trainer:
        """A trainer for your own ``model`` and loaders (batches as ``task`` reads them; default
        :class:`~tdecomp.tasks.ClassificationTask`: ``(inputs, labels)``), with every other
        setting from ``config`` (:func:`objects_config`; its ``model`` and ``data`` are null).

        The model is factorized per ``config.family`` (or passed already factorized with
        ``family=dense``). A loader whose sampler has ``set_epoch`` (``DistributedSampler``) gets
        the epoch; a shuffling loader draws its order from torch's RNG, which checkpoints restore,
        so a resumed run sees the batches an uninterrupted one would.
        """
        config = objects_config(config)
        if not hasattr(train_loader, "__len__"):
            raise ValueError("train_loader must have a length (len(train_loader) steps per epoch); "
                             "an iterable-style dataset without one cannot set the schedule")
        self = cls.__new__(cls)
        self._begin(config)
        self.data = None
        self._assemble(model, train_loader, val_loader, test_loader, task or ClassificationTask(), callbacks)
        return self

    # ------------------------------------------------------------------ construction helpers
    def _begin(self, config: TrainConfig) -> None:
        """``config``, ``out_dir``, the device and distributed context, then the run's seed."""
        self.config = config
        self.out_dir = Path(config.out)
        self._setup_device()
        seed_everything(config.seed)

    def _assemble(
        self,
        model: nn.Module,
        train_loader: DataLoader,
        val_loader: DataLoader | None,
        test_loader: DataLoader,
        task: Task,
        callbacks: Sequence[Callback],
    ) -> None:
        """Everything after the objects: factorization, optimizer, schedule, step, callbacks."""
        config = self.config
        self.task = task
        self.model = self._prepare_model(model)
        self.reg_policy = RegPolicy.from_config(config)
        self.decay_coefficient = self.reg_policy.decay_coefficient(self.param_ratio)
        self.optimizer = self._build_optimizer()
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.sampler = epoch_sampler(train_loader)
        self.steps_per_epoch = len(train_loader)
        epoch_steps = config.epochs * self.steps_per_epoch
        self.total_steps = min(epoch_steps, config.max_steps) if config.max_steps else epoch_steps
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.scheduler = self._build_scheduler()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.forward_model = self._build_forward()
        self._objective, self._undecided = self._build_objective()
        self.state = TrainingState(
            self.model, self.optimizer, self.device, self.out_dir, self.is_main, self.steps_per_epoch,
            self.total_steps, self.total_epochs, grads_scaled=self.scaler.is_enabled() and config.grad_clip <= 0,
            read_loss_scale=self.scaler.get_scale,
        )
        self.callbacks: list[Callback] = [*callbacks, *config_callbacks(config, self.state)]
        self.elapsed = 0.0
        self.lr_sum: float | None = 0.0  # Σ_t η_t over the steps taken (None: resumed from a run that kept none)
        self.code = code_version()  # the code this process imported
        self.earlier_code: list[dict[str, Any]] = []  # other code that trained this run before a resume
        # fields a caller adds to summary.json (e.g. tdecomp compress), after the trainer's own
        self.summary_fields: dict[str, Any] = {}
        names = {"model": type(model).__name__, "data": type(train_loader.dataset).__name__}
        self.names = {key: getattr(config, key) or names[key] for key in names}  # what summary.json calls them

    @property
    def epoch(self) -> int:
        """The current epoch (0-based)."""
        return self.state.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.state.epoch = value

    @property
    def global_step(self) -> int:
        """Optimizer steps done so far."""
        return self.state.step

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.state.step = value

    def _setup_device(self) -> None:
        """``device``, the distributed context ``dist`` and ``is_main``; rejects settings they can't run."""
        config = self.config
        self.device = resolve_device(config.device)
        self.dist = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.is_main = self.dist.is_main
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp=bf16 or amp=none on CPU")

    def _build_data(self) -> datasets.DataBundle:
        config = self.config
        return datasets.create(
            config.data,
            root=config.data_dir,
            download=config.download,
            seed=config.seed,
            subset=config.subset,
            val_fraction=config.val_fraction,
            val_seed=config.split_seed,
            **config.data_kwargs,
        )

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        """``model`` with the ``init_from`` weights, factorized per ``config.family``, on the device;
        sets ``dense_params`` (its parameters with every factorized layer at its dense size) and
        ``param_ratio`` (its parameters while training / dense)."""
        config = self.config
        self.dense_params = dense_parameter_count(model)
        if config.init_from:  # e.g. a trained dense model to compress (tdecomp compress)
            model.load_state_dict(load_model_weights(config.init_from))
        model.to(self.device)  # SI runs where the weights are: on the GPU when training there
        if config.family != "dense":
            skip = config.skip if isinstance(config.skip, str) else set(config.skip)
            if self.data is None and data_needs(config.init, config.allocation):
                raise ValueError(f"init={config.init!r}, allocation={config.allocation!r} read calibration batches, "
                                 "which a run on your own objects does not draw: factorize first with "
                                 "tdecomp.calibrate and tdecomp.factorize_model(…, calibration=…), then fit "
                                 "with family='dense'")
            calibration = config_calibration(config, self.data, model, skip)  # None unless init/allocation read data
            with si_solver(config.si_solver):
                factorize_model(
                    model,
                    config.family,
                    config.factor_rank,
                    init=config.init,
                    skip=skip,
                    progress=self.is_main and config.progress,
                    targets=config.targets,
                    allocation=config.allocation,
                    budget=config.budget,
                    separable=config.separable,
                    calibration=calibration,
                    **config.family_options,
                )
        model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.param_ratio = sum(p.numel() for p in model.parameters()) / self.dense_params
        return model

    def _build_loaders(self) -> tuple[DataLoader, DataLoader | None, DataLoader]:
        """The training loader (a distributed sampler, or token batches), and the validation (None
        without a split) and test loaders."""
        config = self.config
        if config.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size={config.batch_size} must be divisible by the "
                f"{self.dist.world_size} distributed processes"
            )
        loader_kw = dict(
            num_workers=config.workers,
            collate_fn=self.data.collate_fn,
            pin_memory=self.device.type == "cuda" and not self.data.on_device,
            persistent_workers=config.workers > 0,
        )
        if config.max_tokens:
            sizes = getattr(self.data.train, "sizes", None)
            if sizes is None:
                raise ValueError(f"max_tokens={config.max_tokens} needs a dataset with per-example token "
                                 f"sizes (translation); data={config.data!r} has none: use batch_size")
            sampler = TokenBatchSampler(sizes, config.max_tokens, config.seed, self.dist.rank, self.dist.world_size)
            train_loader = DataLoader(self.data.train, batch_sampler=sampler, **loader_kw)
        else:
            sampler = DistributedSampler(
                self.data.train,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=config.seed,
            )
            train_loader = DataLoader(
                self.data.train,
                batch_size=config.batch_size // self.dist.world_size,
                sampler=sampler,
                **loader_kw,
            )
        val_loader, test_loader = (
            None if split is None else DataLoader(split, batch_size=config.eval_batch_size, **loader_kw)
            for split in (self.data.val, self.data.test)
        )
        return train_loader, val_loader, test_loader

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        config = self.config
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_multiplier(
                config.schedule,
                self.total_steps,
                config.warmup_steps or round(config.warmup_epochs * self.steps_per_epoch),
                config.milestones,
                config.gamma,
                config.warmup_factor,
            ),
        )

    def _build_forward(self) -> nn.Module:
        """The module the training step calls: the model, wrapped in DDP; sets TF32 on CUDA."""
        forward: nn.Module = self.model
        if self.dist.enabled:
            forward = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.config.tf32
            torch.backends.cudnn.allow_tf32 = self.config.tf32
        return forward

    def _build_objective(self) -> tuple[Callable[[Any], tuple[torch.Tensor, dict[str, Any]]], bool]:
        """The step's objective function, compiled as configured, and whether ``auto`` layers have
        still to decide their implementation in an eager forward before the first compiled step.

        One compiled function for forward + loss + FD: FD is dozens of tiny Gram products,
        launch-bound, and "reduce-overhead" then replays the whole step (backward included) as
        CUDA graphs for fixed shapes.
        """
        mode = self.config.compile_mode
        if mode is None:
            return self._eager_objective, False
        undecided = None in chosen_implementations(self.model).values()
        return torch.compile(self._eager_objective, mode=mode), undecided

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        groups = self.reg_policy.param_groups(self.model, self.param_ratio)
        if cfg.optimizer in ("sgd", "nag"):
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.optimizer == "nag")
        return torch.optim.AdamW(groups, lr=cfg.lr)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _eager_objective(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """The loss to backprop (task loss + λ/2·FD) and the task's additive epoch counts."""
        with self._autocast():
            loss, stats = self.task.training_step(self.forward_model, batch)
        if self.reg_policy.applies_fd:
            loss = loss + self.reg_policy.penalty(self.model)
        return loss, stats

    def log(self, message: str) -> None:
        if self.is_main:
            log.info(message)

    # ------------------------------------------------------------------ run
    def fit(self) -> dict[str, Any]:
        """Train (or continue) to ``total_steps`` steps in ``total_epochs`` epochs; returns the summary."""
        start_epoch = self._start()
        for cb in self.callbacks:
            cb.on_train_start(self.state)
        done = start_epoch
        try:
            for epoch in range(start_epoch, self.total_epochs):
                self.epoch = epoch
                tic = time.perf_counter()
                sums = self._train_epoch(epoch)
                self._end_epoch(epoch, sums, tic)
                done = epoch + 1
        except KeyboardInterrupt:
            saved = f"{self.out_dir / LAST} holds it" if done else "no checkpoint yet"
            raise TrainingInterrupted(f"interrupted after epoch {done} of {self.total_epochs} ({saved})") from None
        summary = self._summary()
        for cb in self.callbacks:
            cb.on_train_end(self.state, summary)
        return summary

    def _start(self) -> int:
        """Fresh start or resume; returns the first epoch to run."""
        cfg, out = self.config, self.out_dir
        has_checkpoint = (out / LAST).exists()
        if has_checkpoint and not cfg.resume:
            raise FileExistsError(
                f"{out} already holds a run ({LAST}); pass resume=true to continue it or choose another out="
            )
        if has_checkpoint and cfg.resume and (out / CONFIG).exists():
            saved = yaml_values.load((out / CONFIG).read_text())
            conflicts = cfg.conflicts(saved)
            if conflicts:
                changes = ", ".join(f"{k}={saved.get(k)!r} → {getattr(cfg, k)!r}" for k in conflicts)
                raise ValueError(f"resume=true continues the run in {out}, but the config differs from its "
                                 f"{CONFIG}: {changes}; rerun with the original values or choose another out=")
        barrier(self.dist)
        state = load_checkpoint(out, map_location=self.device) if cfg.resume else None
        if state is None:
            if cfg.resume:
                self.log(f"resume=true: {out} holds no checkpoint ({LAST}) yet; starting a fresh run")
            if self.is_main:
                out.mkdir(parents=True, exist_ok=True)
                cfg.to_yaml(out / CONFIG)
                (out / METRICS).write_text("")
            params = sum(p.numel() for p in self.model.parameters())
            self.log(
                f"{self.names['model']} on {self.names['data']}, family={cfg.family}: {params:,} parameters "
                f"({params / self.dense_params:.3f} of dense), {self.steps_per_epoch} steps/epoch"
            )
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        saved = state["callbacks"]
        for key, cb in self._keyed_callbacks().items():
            if key in saved:
                cb.load_state_dict(saved[key])
        set_rng_state(state["rng"])
        self.global_step, self.elapsed = state["global_step"], state["elapsed"]
        self.lr_sum = state.get("lr_sum")  # absent from checkpoints written before it was kept
        self.earlier_code = [c for c in state.get("codes", []) if c != self.code]
        if self.is_main:  # drop records written after the checkpoint (a crash between the two)
            records = [r for r in self._records() if r["epoch"] <= state["epoch"]]
            (out / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records))
        self.log(f"resuming {out} after epoch {state['epoch']} (step {self.global_step})")
        return state["epoch"]

    def _keyed_callbacks(self) -> dict[str, Callback]:
        """Callbacks keyed by class name and occurrence (``DynamicsTracker#0``), so a resumed run
        hands each its own saved state even when the list of callbacks changed."""
        seen: dict[str, int] = {}
        keyed = {}
        for cb in self.callbacks:
            name = type(cb).__qualname__
            keyed[f"{name}#{seen.get(name, 0)}"] = cb
            seen[name] = seen.get(name, 0) + 1
        return keyed

    def _records(self) -> list[dict]:
        path = self.out_dir / METRICS
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []

    def _batches(self, loader: DataLoader) -> Iterator[Any]:
        for batch in loader:
            yield to_device(batch, self.device)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch, cut short at ``total_steps``, without host syncs inside the step: losses and
        counts accumulate on the device and are read every ``log_every`` steps and at the epoch end
        (:meth:`_check_loss`), so a NaN is detected at the next sync, up to ``log_every`` steps after
        it appeared."""
        cfg = self.config
        self.model.train()
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        sums: dict[str, Any] = defaultdict(float)
        pending, pending_from = torch.zeros((), device=self.device), self.global_step
        steps = min(self.steps_per_epoch, self.total_steps - self.global_step)
        bar = tqdm(
            itertools.islice(self._batches(self.train_loader), steps),
            total=steps,
            leave=False,
            desc=f"epoch {epoch + 1}/{self.total_epochs}",
            disable=not (self.is_main and cfg.progress),
        )
        for batch in bar:
            if self._undecided:
                self._decide_implementations(batch)
            objective, stats = self._objective(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(objective).backward()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            for cb in self.callbacks:
                cb.on_before_optimizer_step(self.state)
            if self.lr_sum is not None:
                self.lr_sum += self.optimizer.param_groups[0]["lr"]  # the lr this step uses (every group's)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.reg_policy.rebalances:
                rebalance(self.model, self.optimizer)
            self.scheduler.step()
            self.global_step += 1
            for key, v in stats.items():
                sums[key] += v
            value = objective.detach()
            pending += value.float()
            info = StepInfo(self.global_step, epoch, value, self.optimizer.param_groups[0]["lr"])
            for cb in self.callbacks:
                cb.on_step_end(self.state, info)
            if self.global_step % cfg.log_every == 0:
                self._check_loss(pending, pending_from, bar)
                pending, pending_from = torch.zeros((), device=self.device), self.global_step
        if self.global_step > pending_from:
            self._check_loss(pending, pending_from, bar)
        return self._reduce(sums)

    def _decide_implementations(self, batch: Any) -> None:
        """One eager forward before the first compiled step, so ``auto`` layers decide their
        implementation outside the trace (timed on CUDA, :mod:`tdecomp.layers.choice`) and the trace
        compiles the decided one. Eval mode: batch-norm statistics stay as they are; the layers'
        timing returns its grads."""
        self._undecided = False
        self.model.eval()
        try:
            with self._autocast():
                self.task.training_step(self.model, batch)
        finally:
            self.model.train()

    def _check_loss(self, pending: torch.Tensor, first: int, bar: tqdm) -> None:
        """The host sync: mean objective of steps ``first+1 … global_step``; raises on NaN/inf."""
        value = float(pending) / (self.global_step - first)
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss became {value} between steps {first + 1} and {self.global_step} (epoch "
                f"{self.epoch + 1}); training stopped and the last good checkpoint "
                f"({self.out_dir / LAST}, if any) is kept. Lower lr or check the data."
            )
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)

    def _reduce(self, sums: dict[str, Any]) -> dict[str, float]:
        """The epoch statistics as floats (one host sync), summed over all processes."""
        keys = sorted(sums)
        if not keys:
            return {}
        values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in keys])
        if self.dist.enabled:
            torch.distributed.all_reduce(values)
        return dict(zip(keys, values.tolist()))

    @property
    def decay_integral(self) -> float | None:
        """λ·Σ_t η_t over the optimizer steps taken so far (module docstring); None if unknown. A step
        the fp16 grad scaler skips still counts (telling would need a host sync per step)."""
        return None if self.lr_sum is None else self.decay_coefficient * self.lr_sum

    def evaluate(self) -> dict[str, float]:
        """The task's metrics of the model (eval mode) on the validation split, ``val_`` prefixed
        (when there is one), and on the test set, ``test_`` prefixed: one evaluation for both."""
        self.model.eval()
        metrics: dict[str, float] = {}
        for prefix, loader in (("val_", self.val_loader), ("test_", self.test_loader)):
            if loader is not None:
                with torch.no_grad(), self._autocast():
                    found = self.task.evaluate(self.model, self._batches(loader))
                metrics |= {prefix + key.removeprefix("test_"): value for key, value in found.items()}
        return metrics

    def _end_epoch(self, epoch: int, sums: dict[str, float], tic: float) -> None:
        record: dict[str, Any] = {}
        if self.is_main:
            metrics = self.evaluate()
            count = max(sums.get("count", 0.0), 1.0)
            self.elapsed += time.perf_counter() - tic
            record = {
                "epoch": epoch + 1,
                "step": self.global_step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "decay_integral": self.decay_integral,
                "train_loss": sums.get("loss_sum", 0.0) / count,
                "train_acc": sums.get("correct", 0.0) / count,
                **metrics,
                "time_s": round(self.elapsed, 3),
            }
            with open(self.out_dir / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(
                {
                    **checkpoint_entries(self.model),  # the weights and the plan that rebuilds the model
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks().items()},
                    "rng": rng_state(),
                    "epoch": epoch + 1,
                    "global_step": self.global_step,
                    "elapsed": self.elapsed,
                    "lr_sum": self.lr_sum,
                    "codes": [*self.earlier_code, self.code],
                },
                self.out_dir,
            )
            shown = [k for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
                     if k in record]
            self.log(
                f"epoch {epoch + 1}/{self.total_epochs}  {'  '.join(f'{k} {record[k]:.4f}' for k in shown)}  "
                f"lr {record['lr']:.3g}  {record['time_s']:.1f}s"
            )
        for cb in self.callbacks:
            cb.on_epoch_end(self.state, record)
        barrier(self.dist)

    def _summary(self) -> dict[str, Any]:
        records = self._records() if self.is_main else []
        if not records:
            return {}
        trained_params = sum(p.numel() for p in self.model.parameters())
        cfg, last = self.config, records[-1]
        report = summarize(self.model)
        # a factorized layer larger than its dense weight (overcomplete) is deployed collapsed
        # (collapse_model: same function, dense size), so it counts as dense
        params = trained_params - sum(max(0, layer.params - layer.dense_params) for layer in report.layers)
        best = max((r for r in records if "val_acc" in r), key=lambda r: r["val_acc"], default=None)
        summary = {
            **{k: v for k, v in last.items() if k.startswith(("test_", "val_", "train_"))},
            **({"best_val_acc": best["val_acc"], "best_val_epoch": best["epoch"]} if best else {}),
            "decay_integral": self.decay_integral,
            "params": params,
            "trained_params": trained_params,
            "dense_params": self.dense_params,
            "param_ratio": params / self.dense_params,
            "factorized_layer_ratio": report.ratio if report.layers else 1.0,
            **flop_summary(self.model, self.task, next(self._batches(self.test_loader))),
            "epochs": last["epoch"],
            "steps": last["step"],
            "time_s": last["time_s"],
            **self.names,
            **{k: getattr(cfg, k) for k in ("family", "rank", "init", "reg", "seed")},
            "implementations": chosen_implementations(self.model),
            **provenance(self.device, self.dist.world_size),
            **({"earlier_code": self.earlier_code} if self.earlier_code else {}),
        }
        clash = sorted(set(summary) & set(self.summary_fields))
        if clash:
            raise ValueError(f"summary_fields {clash} would replace the trainer's own summary fields; rename them "
                             f"(the run is checkpointed: resume=true writes its summary again)")
        summary |= self.summary_fields
        _write_json_atomic(self.out_dir / SUMMARY, summary)
        return summary


def train(config: TrainConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run ``config`` to completion (or continue it with ``resume=true``); returns the summary."""
    try:
        return Trainer(config, callbacks).fit()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader,
    val_loader: DataLoader | None = None,
    *,
    task: Task | None = None,
    callbacks: Sequence[Callback] = (),
    **config: Any,
) -> dict[str, Any]:
    """Train your own ``model`` on your own loaders with the trainer's every feature; returns the summary.

    ``config``: any :class:`~tdecomp.config.TrainConfig` key except those that build the registry's
    objects (:data:`~tdecomp.config.OBJECT_KEYS`), e.g. ``family="tucker", rank=0.1, reg="fd",
    epochs=5, lr=0.05, out="runs/mine", resume=True, track_every=50``. See :meth:`Trainer.from_objects`.
    """
    try:
        return Trainer.from_objects(model, train_loader, test_loader, val_loader, task=task,
                                    config=TrainConfig.from_dict(config), callbacks=callbacks).fit()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
