"""Whole-model suites: spectral init of every layer, ``factorize_model``, and the FD term per step.

- ``init``: SI (:func:`tdecomp.factorize`, rank resolution included) of every eligible layer of a
  model, per family and SI solver (``exact`` vs ``auto``: the randomized SVD and short sweeps on
  large layers), with the reconstruction error it reaches; and tensorly-torch's
  ``FactorizedConv.from_conv`` (its CP runs a full PARAFAC) on the first ``tltorch_layers``
  distinct layer shapes only, next to tdecomp's time on the same layers — on large layers it
  takes tens of seconds each.
- ``surgery``: :func:`tdecomp.factorize_model` at a float ratio (budget bisection over a common
  rank scale + SI), and with ``init="random"`` to isolate the bisection and construction.
- ``fd``: one SGD step (forward, cross-entropy, backward, update) of a factorized CIFAR ResNet
  with and without the Frobenius-decay term ``½λ Σ‖W‖²_F`` from factor Grams, timed
  round-robin; the FD fraction is (with − without) / without.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from .._svd import si_solver
from .._tltorch import pytorch_backend
from ..layers.registry import FAMILIES, get_family
from ..layers.spec import DenseSpec
from ..regularize import frobenius_decay
from ..surgery import eligible_layers, factorize, factorize_model
from .layers import tltorch_families
from .timing import Stats, paired_ratio, time_interleaved, time_once


def _model(name: str, device: torch.device) -> nn.Module:
    return models.create(name, num_classes=10, in_channels=3).to(device)


def _distinct(layers: list[tuple[str, nn.Module]], count: int) -> list[tuple[str, nn.Module]]:
    """The first layer of each distinct weight shape, at most ``count`` of them."""
    seen, out = set(), []
    for name, module in layers:
        if isinstance(module, nn.Conv2d) and module.weight.shape not in seen and len(out) < count:
            seen.add(module.weight.shape)
            out.append((name, module))
    return out


def init_suite(
    model_names: Sequence[str], ratio: float, device: torch.device, tltorch_layers: int,
    si_solvers: Sequence[str] = ("auto",),
) -> list[dict]:
    """One row per (model, family, SI solver): total/max SI seconds over all eligible layers and the
    mean relative error ‖W − Ŵ‖/‖W‖; one row per tltorch-timed layer with tdecomp's time on it
    (under ``auto`` if timed, else the first solver). The solvers of one layer are timed one
    after another in an alternating order, so load drifts hit them alike."""
    rows = []
    reference = "auto" if "auto" in si_solvers else si_solvers[0]
    for model_name in model_names:
        layers = eligible_layers(_model(model_name, device))
        per_layer: dict[str, dict[str, float]] = {}
        for family in FAMILIES.names():
            times: dict[str, dict[str, float]] = {s: {} for s in si_solvers}
            errors: dict[str, list[float]] = {s: [] for s in si_solvers}
            for i, (name, module) in enumerate(layers):
                for solver in si_solvers[::-1] if i % 2 else si_solvers:
                    built: list[nn.Module] = []
                    with si_solver(solver):
                        run = partial(lambda m, f, out: out.append(factorize(m, f, ratio)), module, family, built)
                        times[solver][name] = time_once(run, device)
                    errors[solver].append(_relative_error(built[0], module))
            per_layer[family] = times[reference]
            for solver in si_solvers:
                rows.append({
                    "suite": "init", "model": model_name, "library": "tdecomp", "family": family, "ratio": ratio,
                    "si_solver": solver, "layers": len(layers), "total_s": sum(times[solver].values()),
                    "max_layer_s": max(times[solver].values()),
                    "mean_rel_error": sum(errors[solver]) / len(layers),
                })
        for name, module in _distinct(layers, tltorch_layers):
            for family in tltorch_families():
                seconds = _time_tltorch_from_conv(module, family, ratio, device)
                rows.append({
                    "suite": "init", "model": model_name, "library": "tltorch", "family": family, "ratio": ratio,
                    "layer": name, "weight_shape": list(module.weight.shape),
                    "tltorch_s": seconds, "tdecomp_s": per_layer[family][name],
                })
    return rows


@torch.no_grad()
def _relative_error(layer: nn.Module, dense: nn.Module) -> float:
    """‖W − Ŵ‖_F/‖W‖_F of a factorized layer's reconstruction Ŵ against the dense weight W."""
    return float((layer.reconstruct() - dense.weight).norm() / dense.weight.norm())


def _time_tltorch_from_conv(conv: nn.Conv2d, family: str, ratio: float, device: torch.device) -> float:
    import tltorch

    # the family's own split of a float rank where tltorch can follow it (e.g. full-rank kernel modes)
    fmt = get_family(family).tltorch
    options = fmt.from_conv_options(DenseSpec.from_module(conv))
    with pytorch_backend():
        return time_once(
            lambda: tltorch.FactorizedConv.from_conv(
                conv, rank=ratio, factorization=fmt.factorization, decompose_weights=True, **options
            ),
            device,
        )


def surgery_suite(model_names: Sequence[str], ratio: float, device: torch.device) -> list[dict]:
    """One row per (model, family, init): seconds of ``factorize_model`` and the ratio reached."""
    rows = []
    for model_name in model_names:
        dense = _model(model_name, device)
        dense_params = sum(p.numel() for p in dense.parameters())
        for family in FAMILIES.names():
            for init in ("spectral", "random"):
                model = copy.deepcopy(dense)
                run = partial(factorize_model, model, family, ratio, init=init, progress=False)
                seconds = time_once(run, device)
                rows.append({
                    "suite": "surgery", "model": model_name, "family": family, "init": init, "ratio": ratio,
                    "seconds": seconds,
                    "model_param_ratio": sum(p.numel() for p in model.parameters()) / dense_params,
                })
    return rows


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fd: float) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if fd:
            loss = loss + 0.5 * fd * frobenius_decay(model)
        loss.backward()
        opt.step()

    return step


def _fd_only(model: nn.Module) -> Callable[[], None]:
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        frobenius_decay(model).backward()

    return step


def fd_suite(
    model_names: Sequence[str], ratio: float, batch: int, device: torch.device, repeats: int, warmup: int
) -> list[dict]:
    """One row per (model, family): step time without/with FD, the FD term alone, and fractions."""
    rows = []
    for model_name in model_names:
        x = torch.randn(batch, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        candidates = {}
        for family in FAMILIES.names():
            model = factorize_model(_model(model_name, device), family, ratio, init="random", progress=False)
            candidates[f"{family}/no_fd"] = _train_step(model, x, y, 0.0)
            candidates[f"{family}/fd"] = _train_step(copy.deepcopy(model), x, y, 1e-4)
            candidates[f"{family}/fd_only"] = _fd_only(model)
        times = time_interleaved(candidates, repeats, warmup, device)
        for family in FAMILIES.names():
            base = times[f"{family}/no_fd"]
            rows.append({
                "suite": "fd", "model": model_name, "family": family, "ratio": ratio, "batch": batch,
                "step_ms": Stats.of(base).median_ms,
                "step_fd_ms": Stats.of(times[f"{family}/fd"]).median_ms,
                "fd_only_ms": Stats.of(times[f"{family}/fd_only"]).median_ms,
                "fd_fraction": paired_ratio(times[f"{family}/fd"], base) - 1.0,
                "fd_only_fraction": paired_ratio(times[f"{family}/fd_only"], base),
            })
    return rows
