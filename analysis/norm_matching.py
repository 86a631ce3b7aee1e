"""The paper's normalization experiment: train without decay while imposing FD's norm trajectory.

Khodak et al. (2021) argue that Frobenius decay helps factorized layers mainly through the norm
of the product W — which sets the effective step size η/‖W‖² of the scale-invariant (BN-followed)
weights — rather than as a regularizer of the function. To test it: record the per-layer ‖W‖_F
of an FD run, rerun with no decay at all while rescaling every factorized layer after each
optimizer step so that ‖W‖_F follows the recorded trajectory, and compare accuracies. If the
rescaled run recovers FD's accuracy (and the unregularized run does not), the norm is what matters.

Three commands (``experiments/configs/normalization_digits.yaml`` holds the shared recipe)::

    # 1. FD run, recording ‖W‖ of every layer every 10 steps (runs/norm/fd/dynamics.jsonl)
    tdecomp train experiments/configs/normalization_digits.yaml reg=fd out=runs/norm/fd
    # 2. the same without any decay on the factors, rescaled to FD's trajectory
    tdecomp train experiments/configs/normalization_digits.yaml reg=none \\
        norm_match=runs/norm/fd/dynamics.jsonl out=runs/norm/matched
    #    (the control: reg=none without norm_match, out=runs/norm/none)
    # 3. compare accuracies (one folder per condition: mean ± std over the seeds inside it)
    for c in fd matched none; do tdecomp compare runs/norm/$c --by family,reg; done
    tdecomp plot runs/norm/fd runs/norm/matched runs/norm/none --out runs/norm/plots

Add ``seed=S`` and a per-seed ``out=runs/norm/<condition>/sS`` for several seeds, as in
docs/dynamics.md (which reports the digits result).

Dense layers (the first conv, the classifier) keep their plain weight decay in every run.
"""

from __future__ import annotations

from bisect import bisect_right
from pathlib import Path

import torch
from torch import nn

from tdecomp.layers.base import FactorizedLayer
from tdecomp.run_files import CONFIG, SUMMARY
from tdecomp.train.callbacks import Callback, StepInfo, TrainingState

from .dynamics import layer_series, read_dynamics


def interpolate(steps: list[int], values: list[float], step: float) -> float:
    """Piecewise-linear interpolation of ``values`` recorded at increasing ``steps``; constant
    beyond the first and last record."""
    if step <= steps[0]:
        return values[0]
    if step >= steps[-1]:
        return values[-1]
    i = bisect_right(steps, step)
    s0, s1, v0, v1 = steps[i - 1], steps[i], values[i - 1], values[i]
    return v0 + (v1 - v0) * (step - s0) / (s1 - s0)


class NormMatching(Callback):
    """After each optimizer step, rescale every factorized layer so ‖W‖_F equals a recorded value.

    W is multilinear of degree k in its k factors (``len(layer.factors())``: 2 for low-rank, 3
    overcomplete, the number of modes for CP and TT, modes + 1 for Tucker), so multiplying every
    factor by c^{1/k} scales W by c while keeping the factors' relative sizes (and balancedness up
    to the factor c^{2/k}). c = target/‖W‖_F with the target linearly interpolated in the step
    between the recorded ones. Run it on every process of a distributed run (it is deterministic).

    Args:
        model: the model being trained; its factorized layers must all appear in the record.
        record: a ``dynamics.jsonl`` (or a run folder holding one) written by
            :class:`~tdecomp.analysis.dynamics.DynamicsTracker` in the reference (FD) run.
    """

    def __init__(self, model: nn.Module, record: str | Path) -> None:
        folder = Path(record) if Path(record).is_dir() else Path(record).parent
        if (folder / CONFIG).is_file() and not (folder / SUMMARY).is_file():
            # a trajectory still being written would end early and hold the last norm from there on
            raise ValueError(f"norm_match={str(record)!r}: the reference run in {folder} has not finished "
                             f"(no {SUMMARY}); finish it first")
        trajectories = {name: (steps, values) for name, steps, values in layer_series(read_dynamics(record), "norm")}
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, FactorizedLayer)}
        if not self.layers:
            raise ValueError("norm_match needs a factorized model; got family=dense (no factorized layers)")
        missing = sorted(set(self.layers) - {n for n, (s, _) in trajectories.items() if s})
        if missing:
            raise ValueError(
                f"record={str(record)!r} has no norm trajectory for layers {missing}; it must come from a run "
                f"of the same model and factorization (recorded layers: {sorted(trajectories)})"
            )
        self.trajectories = {n: trajectories[n] for n in self.layers}

    def target(self, name: str, step: int) -> float:
        """The recorded ‖W‖_F of layer ``name`` at ``step`` (interpolated)."""
        return interpolate(*self.trajectories[name], step)

    @torch.no_grad()
    def rescale(self, step: int) -> None:
        """Set every factorized layer's ‖W‖_F to its target at ``step``."""
        for name, layer in self.layers.items():
            factors = layer.factors()
            c = self.target(name, step) / layer.frobenius_sq().sqrt()
            root = c ** (1.0 / len(factors))
            for f in factors:
                f.mul_(root)

    def on_step_end(self, state: TrainingState, info: StepInfo) -> None:
        self.rescale(info.step)
