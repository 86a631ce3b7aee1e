"""Calibration: what a trained model's layers see on a few batches, for data-aware compression.

:func:`calibrate` runs the model on calibration batches with forward pre-hooks and accumulates, per
Linear/conv layer, the float64 Gram Σ x xᵀ of the vectors its weight multiplies (Linear: its input
rows, d = c_in; Conv1d/2d/3d: the patches of :func:`patches`, d = c_in·Π kernel_size in
``F.unfold`` order), one batch at a time (a batch's patches are the largest tensor it makes), as
:class:`~tdecomp.layers.whitening.LayerStats`. Whitened SI (``init="whitened"``) and the
``whitened-energy`` rule read those; :func:`fisher_information` adds what the ``fisher`` rule reads.

Both run the model in eval mode (batch norm with its running statistics, no dropout: the function
being compressed; training modes are restored after), move each batch's tensors to the model's
device and its floating tensors to the model's floating dtype, and remove their hooks afterwards.
A batch is a tensor (the input), a tuple/list whose first element is the input (``(x, y)``), or a
mapping of keyword arguments; ``forward(model, batch)`` overrides how the model is called (e.g. a
task's training step).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .allocation import get_allocation
from .init import DATA_INITS
from .layers.spec import CONV_TYPES, DenseSpec
from .layers.whitening import DAMPING, LayerStats

Forward = Callable[[nn.Module, Any], Any]
LossFn = Callable[[nn.Module, Any], Tensor]
Calibration = dict[str, LayerStats]
# what data-aware inits read of a layer's LayerStats (the allocation rules declare theirs)
INIT_NEEDS = {init: ("gram",) for init in DATA_INITS}


def data_needs(init: str, allocation: str) -> frozenset[str]:
    """The :class:`LayerStats` fields that factorizing with ``init`` and ``allocation`` reads:
    ``"gram"`` (:func:`calibrate`), ``"fisher"`` (:func:`fisher_information`); empty: no data."""
    return frozenset(INIT_NEEDS.get(init, ())) | frozenset(getattr(get_allocation(allocation), "needs", ()))


def patches(x: Tensor, spec: DenseSpec) -> Tensor:
    """The vectors a layer ``spec`` multiplies by its weight for one batch ``x``: a Linear layer's input
    (*, c_in) as rows (Π *, c_in); a conv's input (N, c_in, *spatial) as its patches (N·Π out, c_in·Π k),
    row (n, output position), column (i, kernel offset) as ``F.unfold`` orders them, after the padding
    the conv applies (its ``padding_mode``, ``'same'`` with the odd extra pixel last), with its stride
    and dilation. The only copy is this batch's patch matrix."""
    if not spec.is_conv:
        return x.reshape(-1, spec.in_channels)
    if any(any(p) for p in spec.pads):
        mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
        x = F.pad(x, [v for p in reversed(spec.pads) for v in p], mode=mode)
    for a, (k, s, d) in enumerate(zip(spec.kernel_size, spec.stride, spec.dilation)):
        x = x.unfold(2 + a, d * (k - 1) + 1, s)[..., ::d]  # appends axis a's kernel offsets (a view)
    n = spec.n_spatial  # x: (N, c_in, *out, *k) → (N, *out, c_in, *k)
    return x.movedim(1, 1 + n).reshape(-1, spec.in_channels * math.prod(spec.kernel_size))


def layers_to_calibrate(model: nn.Module, layers: Iterable[str] | None = None) -> dict[str, nn.Module]:
    """Name → module of ``layers`` (qualified names), or of every ``nn.Linear`` and ungrouped conv."""
    if layers is None:
        return {n: m for n, m in model.named_modules()
                if isinstance(m, nn.Linear) or (isinstance(m, CONV_TYPES) and m.groups == 1)}
    found = dict(model.named_modules())
    chosen = {}
    for name in layers:
        module = found.get(name)
        if module is None:
            raise ValueError(f"layers names {name!r}, which is not a module of the model")
        DenseSpec.from_module(module)  # TypeError/NotImplementedError for what cannot be factorized
        chosen[name] = module
    return chosen


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    max_batches: int | None = None,
    layers: Iterable[str] | None = None,
    forward: Forward | None = None,
    loss_fn: LossFn | None = None,
    damping: float = DAMPING,
) -> Calibration:
    """Per layer (``layers``, default every Linear and ungrouped conv) the
    :class:`~tdecomp.layers.whitening.LayerStats` of its inputs over the first ``max_batches`` of
    ``batches`` (all if None): Gram Σ x xᵀ (float64) of the vectors its weight multiplies, their
    count, and ``damping`` δ, with which whitening damps C_S to C_S + δ·mean(diag C_S)·I
    (:mod:`tdecomp.layers.whitening`). With ``loss_fn(model, batch) -> loss`` also the layers'
    :func:`fisher_information` over the same batches. Layers that never ran are left out (e.g. a
    Linear that ``nn.MultiheadAttention`` reads but does not call).
    """
    targets = layers_to_calibrate(model, layers)
    kept = list(itertools.islice(batches, max_batches))
    device = _device(model)
    stats = {name: LayerStats(spec, torch.zeros(spec.fan_in, spec.fan_in, dtype=torch.float64, device=device),
                              damping=damping)
             for name, spec in ((n, DenseSpec.from_module(m)) for n, m in targets.items())}

    def hook(name: str) -> Callable[[nn.Module, tuple], None]:
        return lambda module, args: stats[name].add(patches(args[0], stats[name].spec))

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in targets.items()]
    try:
        with _evaluating(model):
            for batch in kept:
                (forward or _call)(model, _prepared(batch, model))
    finally:
        for handle in handles:
            handle.remove()
    if layers is not None and (silent := [n for n, s in stats.items() if not s.count]):
        raise ValueError(f"layers {silent} saw no input over {len(kept)} calibration batches")
    stats = {n: s for n, s in stats.items() if s.count}
    if loss_fn is not None:
        for name, fisher in fisher_information(model, kept, loss_fn, layers=list(stats)).items():
            stats[name].fisher = fisher
    return stats


def fisher_information(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    *,
    max_batches: int | None = None,
    layers: Iterable[str] | None = None,
) -> dict[str, Tensor]:
    """Per layer, Σ over the first ``max_batches`` of ``batches`` of (∂L_b/∂W)², float64, the shape of its
    weight: the diagonal empirical Fisher information from batch gradients of ``loss_fn(model, batch)``
    (the importance of Fisher-weighted SVD, Hsu et al., ICLR 2022). Gradients are taken with
    :func:`torch.autograd.grad` (the weights' ``.grad`` untouched); a weight that does not reach the
    loss, or whose output is multiplied by 0, gets 0."""
    targets = layers_to_calibrate(model, layers)
    weights = [module.weight for module in targets.values()]
    sums = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    with _evaluating(model), torch.enable_grad(), _requiring_grad(weights):
        for batch in itertools.islice(batches, max_batches):
            grads = torch.autograd.grad(loss_fn(model, _prepared(batch, model)), weights, allow_unused=True)
            for total, grad in zip(sums, grads):
                if grad is not None:
                    total += grad.detach().double().square()
    return dict(zip(targets, sums))


def _call(model: nn.Module, batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return model(**batch)
    return model(batch[0] if isinstance(batch, (tuple, list)) else batch)


def _device(model: nn.Module) -> torch.device:
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device


def _prepared(batch: Any, model: nn.Module) -> Any:
    """``batch`` with its tensors on the model's device, floating ones in its floating dtype."""
    floating = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)

    def move(value: Any) -> Any:
        if isinstance(value, Tensor):
            dtype = floating if floating is not None and value.is_floating_point() else value.dtype
            return value.to(_device(model), dtype)
        if isinstance(value, (tuple, list)):
            return type(value)(move(v) for v in value)
        if isinstance(value, Mapping):
            return {k: move(v) for k, v in value.items()}
        return value

    return move(batch)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block; every module's own training flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def _requiring_grad(tensors: Sequence[Tensor]) -> Iterator[None]:
    """``tensors`` require grad inside the block (frozen weights included), as before after it."""
    flags = [t.requires_grad for t in tensors]
    try:
        for t in tensors:
            t.requires_grad_(True)
        yield
    finally:
        for t, flag in zip(tensors, flags):
            t.requires_grad_(flag)


__all__ = ["Calibration", "calibrate", "data_needs", "fisher_information", "layers_to_calibrate", "patches"]
