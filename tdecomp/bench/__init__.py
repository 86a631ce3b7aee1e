"""Benchmarks behind ``tdecomp bench``: timing machinery, suites and reports.

:func:`run` executes the chosen suites and returns one JSON-ready dict; :func:`report.write`
turns it into ``bench.json``, ``bench.md`` and ``layers.png``. Suites:

- ``layers`` (:mod:`.layers`): fwd+bwd of dense vs each family vs tensorly-torch per conv shape;
- ``init`` / ``surgery`` / ``fd`` (:mod:`.models`): SI of whole models, ``factorize_model``,
  the Frobenius-decay term per training step;
- ``train`` (:mod:`.train`): whole training steps per second, dense vs each family, with the
  dynamics tracker's cost per step. Not part of ``all`` (minutes per model on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from . import layers, models, train
from .timing import environment

SUITES = ("layers", "init", "surgery", "fd")  # what ``--suite all`` runs


@dataclass
class Settings:
    """What a run measures; :meth:`preset` gives the full and the ``--quick`` defaults."""

    suites: Sequence[str] = SUITES
    ratios: Sequence[float] = (0.1, 0.25, 0.5)
    batch_sizes: Sequence[int] = (32, 128)
    repeats: int = 10
    warmup: int = 2
    cases: Sequence[layers.ConvCase] = layers.CASES
    init_models: Sequence[str] = ("resnet32", "wrn28_10")
    si_solvers: Sequence[str] = ("auto",)  # init suite: SI solvers to time (tdecomp._svd.SI_SOLVERS)
    tltorch_layers: int = 3
    fd_models: Sequence[str] = ("resnet20", "resnet32")
    fd_batch: int = 32
    train_models: Sequence[str] = tuple(train.WORKLOADS)
    amp: str = "none"
    compile: str | None = None  # torch.compile mode of the train suite (None: eager)
    command: str = field(default="")

    @classmethod
    def preset(cls, quick: bool) -> Settings:
        if not quick:
            return cls()
        return cls(ratios=(0.1,), batch_sizes=(32,), repeats=5, warmup=1, cases=layers.QUICK_CASES,
                   init_models=("resnet32",), fd_models=("resnet20",), fd_batch=16)

    def steps(self) -> int:
        """Units of progress: one per layer setting plus one per other suite."""
        n = len(self.cases) * len(self.ratios) * len(self.batch_sizes) if "layers" in self.suites else 0
        return n + sum(s != "layers" for s in self.suites)


def run(settings: Settings, device: torch.device, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Run ``settings.suites`` on ``device``; the whole-model suites use the smallest ratio."""
    ratio = min(settings.ratios)
    out: dict = {"environment": environment(device), "settings": _jsonable(settings)}
    for suite in settings.suites:
        if suite == "layers":
            out["layers"] = layers.run(settings.cases, settings.ratios, settings.batch_sizes, device,
                                       settings.repeats, settings.warmup, progress)
            continue
        if suite == "init":
            out["init"] = models.init_suite(settings.init_models, ratio, device, settings.tltorch_layers,
                                            settings.si_solvers)
        elif suite == "surgery":
            out["surgery"] = models.surgery_suite(settings.init_models, ratio, device)
        elif suite == "train":
            out["train"] = train.train_suite(settings.train_models, ratio, min(settings.batch_sizes), device,
                                             settings.repeats, settings.warmup, settings.amp, settings.compile)
        elif suite == "fd":
            out["fd"] = models.fd_suite(settings.fd_models, ratio, settings.fd_batch, device,
                                        settings.repeats, settings.warmup)
        progress(suite)
    return out


def _jsonable(settings: Settings) -> dict:
    d = asdict(settings)
    d["cases"] = [c.label for c in settings.cases]
    return d


__all__ = ["SUITES", "Settings", "run"]
