"""Norm and effective-step-size dynamics of every factorized layer and dense weight during training.

:class:`DynamicsTracker` records, every ``every`` optimizer steps, for each
:class:`~tdecomp.layers.base.FactorizedLayer` (name, ``family``) and each dense ``nn.Linear`` /
``nn.Conv{1,2,3}d`` weight (``family = "dense"``) one entry of ``OUT/dynamics.jsonl``::

    {"step": 100, "layers": {"features.3": {"family": "lowrank", "norm": 2.1, ...}, ...}}

Per layer (W the layer's weight, W₍ₘₐₜ₎ its matricization :func:`~tdecomp.layers.spec.matricize`,
(c_out·k_h) × (c_in·k_w) for a 2-D kernel, c_out × (c_in·k) for a 1-D one, σ its
singular values, η the learning rate of the optimizer group holding the layer, λ that group's
decay — the Frobenius-decay coefficient under FD, else its weight decay —, α its momentum):

- ``norm`` ‖W‖_F = √frobenius_sq() (from factor Grams, W never materialized);
- ``factor_norms`` [‖F_k‖_F] and ``nuclear_bound`` ½Σ_k‖F_k‖²_F (factorized layers): the penalty
  plain weight decay puts on the factors per unit λ; for two factors (low-rank) it bounds the
  nuclear norm from above, ½(‖U‖²+‖V‖²) ≥ ‖UVᵀ‖_*;
- ``nuclear`` ‖W₍ₘₐₜ₎‖_* = Σσ, ``sigma_max`` σ₁, ``stable_rank`` ‖W‖²_F/σ₁² and
  ``effective_rank`` exp(−Σ p_i log p_i) with p_i = σ_i/Σσ (Roy & Vetterli 2007: the exponential
  of the entropy of the normalized singular values, between 1 and rank(W)) — only where the SVD is
  cheap: families with a factor-only :meth:`singular_values` (low-rank, CP, Tucker: QR of factors
  and an SVD of a small core), or W₍ₘₐₜ₎ with min side ≤ ``svd_max_dim`` (dense, TT);
- ``balancedness`` of the factors (:meth:`FactorizedLayer.balancedness`; ‖UᵀU − VᵀV‖_F for
  low-rank, each family documents its analog);
- ``lr`` η, ``eta_over_norm`` η/‖W‖, ``eta_over_norm_sq`` η/‖W‖² (the effective step of a
  scale-invariant weight under SGD), ``weight_decay`` λ, ``momentum`` α;
- ``angle_step`` arccos(⟨W_{t−1}, W_t⟩/(‖W_{t−1}‖‖W_t‖)) (rad) of the recorded step t alone, and
  ``angle_interval`` the same between this record and the previous one; ⟨·,·⟩ comes from
  :meth:`FactorizedLayer.inner` with a detached snapshot of the factors (cross-Gram identities,
  no reconstruction). ``equilibrium`` √(2ηλ/(1+α)) is the per-step angular update a
  scale-invariant SGD weight settles at (Wan et al. 2021), to compare with ``angle_step``;
- ``grad_norm`` ‖∂L/∂θ‖ over the layer's factors (or dense weight), before the update.

All quantities are computed in float64 (so angular updates of 1e-4 rad are resolved), kept on the
parameters' device, and written in batches of ``flush_every`` records, by rank 0 only. Undefined
entries (no previous snapshot, SVD not cheap, a dense layer's balancedness) are left out.
Attention modules (:class:`~tdecomp.layers.attention.FactorizedMultiheadAttention`) and grouped
convolutions are not tracked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tdecomp.layers.base import FactorizedLayer
from tdecomp.layers.factorized import Factorized
from tdecomp.layers.spec import CONV_TYPES, DenseSpec, matricize
from tdecomp.layers.walk import call_with, named_outermost
from tdecomp.run_files import DYNAMICS
from tdecomp.train.callbacks import Callback, StepInfo, TrainingState

# the per-layer vector kept on device, in this order, followed by the factor norms
_VECTOR = (
    "norm",
    "nuclear_bound",
    "nuclear",
    "sigma_max",
    "stable_rank",
    "effective_rank",
    "balancedness",
    "angle_step",
    "angle_interval",
    "grad_norm",
)


class _DenseView:
    """A dense weight seen through the :class:`FactorizedLayer` dynamics interface (one factor)."""

    def __init__(self, weight: Tensor, spec: DenseSpec) -> None:
        self.weight, self.spec = weight, spec

    def factors(self) -> list[Tensor]:
        return [self.weight]

    def frobenius_sq(self) -> Tensor:
        return self.weight.square().sum()

    def inner(self, other: Sequence[Tensor]) -> Tensor:
        return (self.weight * other[0]).sum()

    def singular_values(self) -> Tensor:
        return torch.linalg.svdvals(matricize(self.weight, self.spec))


@dataclass
class _Tracked:
    name: str
    family: str  # a FactorizedLayer's family, or "dense"
    module: nn.Module
    spec: DenseSpec
    params: list[nn.Parameter]  # the factors, or [weight]
    cheap_svd: bool

    def in_float64(self, fn: Any) -> Any:
        """``fn(view)`` with the layer's parameters and buffers cast to float64 (W never formed)."""
        if self.family == "dense":
            return fn(_DenseView(self.module.weight.detach().double(), self.spec))
        state = {n: t.detach().double() for n, t in self.module.named_parameters()}
        state |= {n: t.double() for n, t in self.module.named_buffers()}
        return call_with(self.module, fn, state)


def _tracked_layers(model: nn.Module, svd_max_dim: int) -> list[_Tracked]:
    """Factorized layers and dense Linear/Conv{1,2,3}d weights, outermost first, in module order
    (nothing inside a factorized module: attention has no per-layer dynamics interface yet)."""
    found: list[_Tracked] = []

    def small(spec: DenseSpec) -> bool:
        return min(spec.matrix_shape) <= svd_max_dim

    for name, module in named_outermost(model, (Factorized, nn.Linear, *CONV_TYPES), remove_duplicate=False):
        if isinstance(module, FactorizedLayer):
            factor_svd = type(module).singular_values is not FactorizedLayer.singular_values
            cheap = factor_svd or small(module.spec)
            found.append(_Tracked(name, module.family, module, module.spec, module.factor_parameters(), cheap))
        elif not isinstance(module, Factorized) and getattr(module, "groups", 1) == 1:
            spec = DenseSpec.from_module(module)
            found.append(_Tracked(name, "dense", module, spec, [module.weight], small(spec)))
    return found


def _angle(cos: Tensor) -> Tensor:
    return torch.arccos(cos.clamp(-1.0, 1.0))


def _copy_factors(view: Any) -> tuple[list[Tensor], Tensor]:
    """Detached copies of the (float64) factors and ‖W‖²: the snapshot for angular updates."""
    return [f.detach().clone() for f in view.factors()], view.frobenius_sq().detach()


def _measure(
    view: Any, t: _Tracked, snaps: list[tuple[list[Tensor], Tensor] | None], grad: Tensor | None
) -> tuple[Tensor, tuple[list[Tensor], Tensor]]:
    """The per-layer vector (:data:`_VECTOR` then the factor norms; NaN where undefined) and the
    new snapshot. ``snaps``: the pre-update snapshot of this step and the previous record's."""
    factors, norm_sq = _copy_factors(view)
    factorized = t.family != "dense"
    nan = norm_sq.new_tensor(math.nan)
    norm = norm_sq.sqrt()
    factor_norms = torch.stack([f.norm() for f in factors]) if factorized else nan[None][:0]
    bound = 0.5 * factor_norms.square().sum() if factorized else nan
    nuclear = sigma_max = stable = erank = nan
    if t.cheap_svd:
        s = view.singular_values()
        nuclear, sigma_max = s.sum(), s[0]
        stable = norm_sq / sigma_max.square()
        p = s / nuclear
        erank = torch.exp(-torch.special.xlogy(p, p).sum())
    balance = view.balancedness() if factorized else nan
    angles = [nan if snap is None else _angle(view.inner(snap[0]) / (norm * snap[1].sqrt())) for snap in snaps]
    grad_norm = nan if grad is None else grad
    head = torch.stack([norm, bound, nuclear, sigma_max, stable, erank, balance, *angles, grad_norm])
    return torch.cat([head, factor_norms]), (factors, norm_sq)


class DynamicsTracker(Callback):
    """Records norm, spectrum and effective-step-size dynamics every ``every`` optimizer steps.

    With the trainer: ``tdecomp train … track_every=50`` (or pass it in ``callbacks``). From a
    plain PyTorch loop, three lines::

        with DynamicsTracker(model, optimizer, every=50, out="runs/x") as tracker:   # 1
            for x, y in loader:
                optimizer.zero_grad(); criterion(model(x), y).backward()
                tracker.before_step()                                                # 2
                optimizer.step()
                tracker.step()                                                       # 3

    ``before_step`` (optional) captures gradient norms and the snapshot for ``angle_step``;
    without it the gradient norms are read after the update (``.grad`` is still there) and
    ``angle_step`` is left out. Leaving the ``with`` block (or :meth:`close`) flushes.

    Args:
        model: the model whose layers to track (unwrapped from DDP / ``torch.compile``).
        optimizer: gives each layer's η, λ and α from the parameter group holding it.
        every: record every this many optimizer steps (> 0); step 0 (initial weights) is recorded
            at :meth:`on_train_start` or the first :meth:`before_step`.
        out: folder receiving ``dynamics.jsonl``; ``None`` keeps the records in :attr:`records`.
        flush_every: records kept on device between writes (one host sync per flush).
        svd_max_dim: largest min-side of W₍ₘₐₜ₎ for which a reconstruction-based SVD counts as cheap.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        every: int = 50,
        out: str | Path | None = None,
        *,
        flush_every: int = 20,
        svd_max_dim: int = 1024,
    ) -> None:
        for key, value in (("every", every), ("flush_every", flush_every), ("svd_max_dim", svd_max_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        self.every, self.flush_every = every, flush_every
        self.optimizer = optimizer
        self.path = None if out is None else Path(out) / DYNAMICS
        self.layers = _tracked_layers(model, svd_max_dim)
        if not self.layers:
            raise ValueError("model has no nn.Linear, nn.Conv{1,2,3}d or factorized layer to track")
        self.active = not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)
        self.step_count = 0  # optimizer steps done
        self.records: list[dict] = []  # written records when out is None
        self._pending: list[tuple[int, Tensor, list[tuple[float, float, float | None]]]] = []
        self._previous: dict[str, tuple[list[Tensor], Tensor]] | None = None  # last record's snapshot
        self._before: dict[str, tuple[list[Tensor], Tensor]] | None = None  # this step's pre-update one
        self._grads: dict[str, Tensor | None] | None = None
        self._group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        self._fresh_file = True  # truncate dynamics.jsonl on the first write of a fresh run

    # ------------------------------------------------------------------ plain-loop API
    def before_step(self, grad_scale: float = 1.0) -> None:
        """Call after ``backward()`` and before ``optimizer.step()``; ``grad_scale`` divides the
        gradients (a GradScaler's scale when they are still scaled)."""
        if not self.active:
            return
        if self.step_count == 0 and self._previous is None:
            self._record(0, {})
        if (self.step_count + 1) % self.every == 0:
            self._before = self._snapshot()
            self._grads = self._grad_norms(grad_scale)

    def step(self) -> None:
        """Call right after ``optimizer.step()``: counts the step and records every ``every``."""
        self.step_count += 1
        if self.active and self.step_count % self.every == 0:
            grads = self._grads if self._grads is not None else self._grad_norms(1.0)
            self._grads = None
            self._record(self.step_count, grads)

    def close(self) -> None:
        """Write the records still held on device."""
        self.flush()

    def __enter__(self) -> DynamicsTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ trainer hooks
    def on_train_start(self, state: TrainingState) -> None:
        self.step_count = state.step
        if self.active and self.step_count == 0 and self._previous is None:
            self._record(0, {})

    def on_before_optimizer_step(self, state: TrainingState) -> None:
        self.step_count = state.step
        # fp16 gradients still carry the loss scale here unless clipping already unscaled them
        self.before_step(state.loss_scale() if state.grads_scaled else 1.0)

    def on_step_end(self, state: TrainingState, info: StepInfo) -> None:
        self.step_count = info.step - 1
        self.step()

    def on_epoch_end(self, state: TrainingState, record: dict) -> None:
        self.flush()

    def on_train_end(self, state: TrainingState, summary: dict) -> None:
        self.flush()

    def state_dict(self) -> dict:
        """Flushes first, so the file holds exactly the records up to the saved step."""
        self.flush()
        previous = None
        if self._previous is not None:
            previous = {k: {"factors": f, "norm_sq": s} for k, (f, s) in self._previous.items()}
        return {"step": self.step_count, "previous": previous}

    def load_state_dict(self, state: dict) -> None:
        """Restore the step and snapshot; drop records written after the checkpoint."""
        self.step_count = int(state["step"])
        previous = state["previous"]
        self._previous = None if previous is None else {
            k: (list(v["factors"]), v["norm_sq"]) for k, v in previous.items()
        }
        self._fresh_file = False
        if self.active and self.path is not None and self.path.exists():
            keep = [r for r in read_dynamics(self.path) if r["step"] <= self.step_count]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    # ------------------------------------------------------------------ recording
    @torch.no_grad()
    def _snapshot(self) -> dict[str, tuple[list[Tensor], Tensor]]:
        """Detached float64 copies of every layer's factors, and ‖W‖² at that moment."""
        return {t.name: t.in_float64(_copy_factors) for t in self.layers}

    @torch.no_grad()
    def _grad_norms(self, scale: float) -> dict[str, Tensor | None]:
        norms = {}
        for t in self.layers:
            grads = [p.grad.double().square().sum() for p in t.params if p.grad is not None]
            norms[t.name] = torch.stack(grads).sum().sqrt() / scale if grads else None
        return norms

    def _hyper(self, t: _Tracked) -> tuple[float, float, float | None]:
        """(η, λ, α) of the optimizer group holding the layer's first parameter (λ: FD coefficient
        under Frobenius decay, else the group's weight decay; α: ``None`` without momentum)."""
        index = self._group_of.get(id(t.params[0]))
        if index is None:
            return math.nan, 0.0, None
        group = self.optimizer.param_groups[index]
        decay = group.get("frobenius_decay", 0.0) or group.get("weight_decay", 0.0)
        return float(group["lr"]), float(decay), group.get("momentum")

    @torch.no_grad()
    def _record(self, step: int, grads: dict[str, Tensor | None]) -> None:
        vectors, snapshot = [], {}
        for t in self.layers:
            snaps = [None if s is None else s[t.name] for s in (self._before, self._previous)]
            vector, snapshot[t.name] = t.in_float64(partial(_measure, t=t, snaps=snaps, grad=grads.get(t.name)))
            vectors.append(vector)
        self._pending.append((step, torch.cat(vectors), [self._hyper(t) for t in self.layers]))
        self._previous, self._before = snapshot, None
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> list[dict]:
        """Move the pending records to the host (one sync) and write them; returns them."""
        if not self._pending or not self.active:
            return []
        values = torch.stack([v for _, v, _ in self._pending]).cpu().tolist()
        written = [
            {"step": step, "layers": self._layer_entries(row, hyper)}
            for (step, _, hyper), row in zip(self._pending, values)
        ]
        self._pending = []
        if self.path is None:
            self.records.extend(written)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w" if self._fresh_file else "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in written))
            self._fresh_file = False
        return written

    def _layer_entries(self, row: list[float], hyper: list[tuple[float, float, float | None]]) -> dict:
        entries, i = {}, 0
        for t, (lr, decay, momentum) in zip(self.layers, hyper):
            n = len(_VECTOR) + (len(t.params) if t.family != "dense" else 0)
            values = dict(zip(_VECTOR, row[i : i + len(_VECTOR)]))
            entry: dict[str, Any] = {"family": t.family}
            entry |= {k: v for k, v in values.items() if math.isfinite(v)}
            if t.family != "dense":
                entry["factor_norms"] = row[i + len(_VECTOR) : i + n]
            norm = values["norm"]
            entry |= {"lr": lr, "weight_decay": decay}
            if norm > 0:  # undefined for an all-zero weight, omitted like every other undefined value
                entry |= {"eta_over_norm": lr / norm, "eta_over_norm_sq": lr / norm**2}
            if momentum is not None:
                entry["momentum"] = momentum
                entry["equilibrium"] = math.sqrt(2 * lr * decay / (1 + momentum))
            entries[t.name] = entry
            i += n
        return entries


def read_dynamics(path: str | Path) -> list[dict]:
    """The records of a ``dynamics.jsonl`` file, or of a run folder holding one, in step order."""
    path = Path(path)
    if path.is_dir():
        path = path / DYNAMICS
    if not path.is_file():
        raise FileNotFoundError(f"no dynamics record at {path} (train with track_every=N to make one)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def layer_series(records: Sequence[dict], metric: str) -> Iterator[tuple[str, list[int], list[float]]]:
    """(layer name, steps, values) of ``metric`` for every layer, skipping steps where it is absent."""
    names = list(dict.fromkeys(name for r in records for name in r["layers"]))
    for name in names:
        points = [(r["step"], r["layers"][name][metric]) for r in records if metric in r["layers"].get(name, {})]
        yield name, [s for s, _ in points], [v for _, v in points]
