"""Spectral initialization as every factorized layer gets it (:meth:`FactorizedLayer.from_dense`):
in at least float32, refused on the meta device, and with the directions a zero or rank-deficient
weight lacks padded so that every factor trains.

- Precision: the decompositions (SVD, QR, ALS solves) have no half-precision CPU kernels and would
  lose most digits there anyway, so a float16/bfloat16 layer runs its family's ``init_spectral`` in
  float32 and is cast back; float32 and float64 layers decompose in their own dtype.
- Meta: SI needs the weight's values. Shape-only surgery (a model built on ``device="meta"``, or
  rebuilt from a checkpoint's plan) uses ``init="random"``, which only draws.
- Padding: SI of a weight with fewer independent directions than the ranks ask for (a zero-initialized
  classifier, LoRA's B, a rank-1 weight at rank 4) returns factors whose missing components are (near)
  zero. In a multilinear product a factor entry gets a gradient only through its partners in the other
  factors, so a component zero on both sides of a bond never trains (U Vᵀ with U = V = 0 stays at the
  saddle), and a factor whose partners are all zero gets no gradient at all (Tucker's U_k when the core
  is 0). :func:`pad_dead_directions` looks at the *slices* of every factor along each axis (a column of
  U, a CP component, a core's bond index): a slice is dead when both its norm and its sensitivity
  (the norm of ∂W/∂F over its entries, estimated with :data:`PROBES` random probes z, Hutchinson:
  E_z[(J_Fᵀz)_e²] = ‖∂W/∂F_e‖²) are at most :data:`DEAD_FRACTION` of the largest along that axis; a
  factor is starved when its largest sensitivity is at most that fraction of the layer's. If either
  happens, the dead slices, and (if a factor is starved) every small slice of every factor, get
  N(0, t²·s_k²) added: s_k the factor's RMS (for an all-zero factor, the balanced per-factor std of a
  random init at the dense default scale), t the largest scale (bisected) at which the padding moves W
  by at most :data:`PAD_FRACTION`·‖W‖_F (the norm of PyTorch's default init for a zero weight). So W
  stays its best approximation up to that fraction, every factor gets a gradient, and the layer says
  what was padded in ``si_padding`` (:func:`tdecomp.summarize` lists it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..init import balanced_std

if TYPE_CHECKING:
    from .base import FactorizedLayer

HALF_DTYPES = (torch.float16, torch.bfloat16)
PROBES = 4  # Hutchinson probes, summed over a slice's entries: a live slice is never mistaken for a dead one
DEAD_FRACTION = 3e-3  # a slice norm below this fraction of the largest counts as none (float32 SVD noise: ~3e-4)
PAD_FRACTION = 1e-3  # ‖ΔW‖_F / ‖W‖_F the padding may cause
BISECTION_STEPS = 30  # over log10 t ∈ [−12, 0]
ZERO_WEIGHT, RANK_DEFICIENT = "zero weight", "rank-deficient weight"  # what ``si_padding`` says


def spectral_init(layer: FactorizedLayer, weight: Tensor) -> None:
    """The family's ``init_spectral(weight)`` in ≥ float32, then :func:`pad_dead_directions` unless the
    layer's SI keeps its zeros on purpose (``_pads_missing_directions``); sets ``layer.si_padding``."""
    if weight.is_meta or any(p.is_meta for p in layer.parameters()):
        raise ValueError("init='spectral' needs the dense weight's values, which a meta-device module does not "
                         "hold; use init='random' for shape-only surgery (or load a checkpoint)")
    dtype = layer.factors()[0].dtype
    if dtype not in HALF_DTYPES:
        _init_and_pad(layer, weight)
        return
    layer.float()
    try:
        _init_and_pad(layer, weight.float())
    finally:
        layer.to(dtype)


def _init_and_pad(layer: FactorizedLayer, weight: Tensor) -> None:
    layer.init_spectral(weight)
    layer.si_padding = pad_dead_directions(layer, weight) if layer._pads_missing_directions() else None


@torch.no_grad()
def pad_dead_directions(layer: FactorizedLayer, weight: Tensor) -> str | None:
    """Pad the dead slices of ``layer``'s factors after SI of ``weight`` (module docstring); returns what
    was padded (:data:`ZERO_WEIGHT`, :data:`RANK_DEFICIENT`) or ``None`` if nothing was dead."""
    factors = layer.factors()
    sensitivities = [s.sqrt() for s in _squared_sensitivities(layer, factors)]
    top = max(float(s.amax()) for s in sensitivities)
    starved = any(float(s.amax()) <= DEAD_FRACTION * top for s in sensitivities)
    masks = [_small_slices(f, s) | (_small_slices(f) if starved else False) for f, s in zip(factors, sensitivities)]
    if not any(m.any() for m in masks):
        return None
    spec = layer.spec
    zero = not bool(weight.any())
    reference = spec.default_std * math.sqrt(spec.weight_numel) if zero else float(weight.double().norm())
    fallback = balanced_std(reference / math.sqrt(spec.weight_numel), layer._random_init_terms(), len(factors))
    noise = [torch.randn_like(f) * (float(f.double().square().mean().sqrt()) or fallback) * m
             for f, m in zip(factors, masks)]
    start, w0 = [f.clone() for f in factors], layer.reconstruct()

    def moved(t: float) -> float:
        for f, f0, n in zip(factors, start, noise):
            f.copy_(f0 + t * n)
        return float((layer.reconstruct() - w0).double().norm())

    moved(_largest_scale(moved, PAD_FRACTION * reference))
    return ZERO_WEIGHT if zero else RANK_DEFICIENT


def _small_slices(factor: Tensor, sensitivity: Tensor | None = None) -> Tensor:
    """Entries of ``factor`` in a slice (along any axis longer than 1) whose norm is at most
    :data:`DEAD_FRACTION` of the largest along that axis — and, given ``sensitivity``, whose
    sensitivity norm is too (a dead slice)."""
    mask = torch.zeros_like(factor, dtype=torch.bool)
    for axis, size in enumerate(factor.shape):
        if size == 1:
            continue
        small = _small(factor, axis) if sensitivity is None else _small(factor, axis) & _small(sensitivity, axis)
        mask |= small.reshape([-1 if a == axis else 1 for a in range(factor.ndim)])
    return mask


def _small(t: Tensor, axis: int) -> Tensor:
    """Per index along ``axis``: whether that slice's norm is at most DEAD_FRACTION of the largest."""
    norms = t.movedim(axis, 0).reshape(t.shape[axis], -1).norm(dim=1)
    return norms <= DEAD_FRACTION * norms.amax()


def _squared_sensitivities(layer: FactorizedLayer, factors: list[Tensor]) -> list[Tensor]:
    """Σ over :data:`PROBES` Gaussian z of (J_Fᵀz)², per factor F (∝ ‖∂W/∂F_e‖² per entry), W = reconstruct().

    A local generator: SI stays deterministic and leaves the global random stream alone."""
    leaves = [f.detach().requires_grad_() for f in factors]
    with torch.enable_grad():
        w = layer._reconstruct_with(leaves)
    generator = torch.Generator(device=w.device).manual_seed(0)
    totals = [torch.zeros_like(f) for f in factors]
    for _ in range(PROBES):
        z = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        grads = torch.autograd.grad(w, leaves, z, retain_graph=True, allow_unused=True)
        for total, g in zip(totals, grads):
            if g is not None:
                total += g.square()
    return totals


def _largest_scale(moved: Callable[[float], float], target: float) -> float:
    """The largest t = 10^x, x ∈ [−12, 0], with ``moved(t)`` ≤ ``target`` (bisection on x; ``moved``
    grows with t as a low-order polynomial)."""
    if moved(1.0) <= target:
        return 1.0
    lo, hi = -12.0, 0.0
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if moved(10.0**mid) <= target else (lo, mid)
    return 10.0**lo
