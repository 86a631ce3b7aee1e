"""The ``train`` suite: whole training steps per second, dense vs each family at a ratio.

One step = forward (optionally under autocast and ``torch.compile``), cross-entropy, the FD term
``½λ Σ‖W‖²_F`` (factorized models), backward, SGD update — the trainer's step on synthetic batches
made on the device (as ``data=fake``), so no input pipeline is timed. Models: ResNet-32×2,
WRN-28-10 and VGG-19 on CIFAR-shaped batches, ``transformer_small`` (encoder-decoder) on token
batches. Factorized models use ``init="random"`` (SI time is the ``init`` suite's business; it
does not change the step). All candidates of a model are timed round-robin
(:func:`~tdecomp.bench.timing.time_interleaved`). The dynamics tracker's cost is one record
(``before_step`` + ``step`` at a record step) divided by ``track_every`` steps.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import models
from ..layers.registry import FAMILIES
from ..regularize import frobenius_decay, param_groups
from ..surgery import factorize_model
from .timing import Stats, paired_ratio, synchronize, time_interleaved

FD = 5e-4
VOCAB, SEQ_LEN = 1000, 32


@dataclass(frozen=True)
class Workload:
    """A model and how to make one batch for it: ``(inputs, targets)`` on a device."""

    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    tokens: bool = False  # inputs are (src, tgt_in) token ids instead of images

    def build(self) -> nn.Module:
        if self.tokens:
            return models.create(self.model, src_vocab=VOCAB, tgt_vocab=VOCAB, **self.kwargs)
        return models.create(self.model, num_classes=10, in_channels=3, **self.kwargs)

    def batch(self, size: int, device: torch.device) -> tuple[tuple[Tensor, ...], Tensor]:
        g = torch.Generator(device).manual_seed(0)
        if self.tokens:
            src, tgt = (torch.randint(1, VOCAB, (size, SEQ_LEN), generator=g, device=device) for _ in range(2))
            return (src, tgt), tgt
        x = torch.randn(size, 3, 32, 32, generator=g, device=device)
        return (x,), torch.randint(10, (size,), generator=g, device=device)


WORKLOADS = {
    "resnet32x2": Workload("resnet32", {"width": 2}),
    "wrn28_10": Workload("wrn28_10"),
    "vgg19": Workload("vgg19"),
    "transformer_small": Workload("transformer_small", tokens=True),
}


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _step(model: nn.Module, batch: tuple[tuple[Tensor, ...], Tensor], fd: float, device: torch.device,
          amp: str, compile_mode: str | None) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    inputs, target = batch
    opt = torch.optim.SGD(param_groups(model, 5e-4, fd), lr=1e-3, momentum=0.9)

    def objective() -> Tensor:
        with _autocast(device, amp):
            logits = model(*inputs)
        loss = F.cross_entropy(logits.flatten(0, -2).float(), target.flatten())
        return loss + 0.5 * fd * frobenius_decay(model) if fd else loss

    compiled = torch.compile(objective, mode=compile_mode) if compile_mode else objective

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        compiled().backward()
        opt.step()

    return step, opt


def _record_ms(model: nn.Module, opt: torch.optim.Optimizer, device: torch.device, records: int = 3) -> float:
    """Milliseconds one dynamics record costs (gradients of the last step still in place)."""
    from tdecomp.analysis.dynamics import DynamicsTracker
    tracker = DynamicsTracker(model, opt, every=1, flush_every=records + 1)
    tracker.before_step()  # the step-0 record, untimed
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(records):
        tracker.before_step()
        tracker.step()
    tracker.flush()
    synchronize(device)
    return 1e3 * (time.perf_counter() - tic) / records


def train_suite(
    workloads: Sequence[str], ratio: float, batch: int, device: torch.device, repeats: int, warmup: int,
    amp: str = "none", compile_mode: str | None = None, track_every: int = 50,
    families: Sequence[str] | None = None, progress: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """One row per (workload, dense | family): step time, steps/s, time / dense, tracker cost."""
    families = tuple(FAMILIES.names() if families is None else families)
    rows = []
    for name in workloads:
        work = WORKLOADS[name]
        torch.manual_seed(0)
        dense = work.build().to(device)
        dense_params = sum(p.numel() for p in dense.parameters())
        data = work.batch(batch, device)
        built: dict[str, tuple[nn.Module, Callable[[], None], torch.optim.Optimizer]] = {}
        for family in ("dense", *families):
            model = dense if family == "dense" else factorize_model(
                copy.deepcopy(dense), family, ratio, init="random", progress=False)
            step, opt = _step(model, data, 0.0 if family == "dense" else FD, device, amp, compile_mode)
            built[family] = (model, step, opt)
        times = time_interleaved({f: s for f, (_, s, _) in built.items()}, repeats, warmup, device)
        for family, (model, _, opt) in built.items():
            stats = Stats.of(times[family])
            record = _record_ms(model, opt, device)
            rows.append({
                "suite": "train", "model": name, "family": family, "ratio": None if family == "dense" else ratio,
                "batch": batch, "amp": amp, "compile": compile_mode or "eager",
                "param_ratio": sum(p.numel() for p in model.parameters()) / dense_params,
                **stats.as_dict(), "steps_per_s": 1e3 / stats.median_ms,
                "vs_dense": paired_ratio(times[family], times["dense"]),
                "tracker_record_ms": record, "track_every": track_every,
                "tracker_overhead": record / (track_every * stats.median_ms),
            })
        progress(name)
    return rows
