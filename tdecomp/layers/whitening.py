"""Data-aware (whitened) SI: decompose W·L instead of W, with C = L Lᵀ the second moment of the
layer's inputs, so that the truncation minimizes the output error ‖(W − Ŵ)X‖_F, not ‖W − Ŵ‖_F.

**The objective.** A dense layer multiplies each input vector (Linear) or patch (conv, in
``F.unfold`` order: c_in major, then the kernel offsets) x ∈ R^d, d = c_in·Π k, by W₍₁₎, the
(c_out, d) reshaping of W. Over N calibration inputs X (d, N), with E = (W − Ŵ)₍₁₎ and
C = XXᵀ/N, the output error is ‖EX‖²_F = N·tr(E C Eᵀ).

**Whitening a family's input space.** Every family has exactly one factor indexed by (part of) the
input: its *input factor* F_in, indexed by the weight axes S of :meth:`FactorizedLayer.input_axes`
(low rank: V, over c_in and the column kernel modes of its matricization; CP/Tucker/TT: A_in, U_in,
the first core, over c_in). Split the other kernel axes off as R and write E[o, r, s]. If
C = C_S ⊗ I_R — patch entries at different offsets r uncorrelated, each offset's block the same —
then tr(E C Eᵀ) = Σ_{o,r} E[o,r,:] C_S E[o,r,:]ᵀ = ‖E ×_S Lᵀ‖²_F with C_S = L Lᵀ (Cholesky). So
with W' = W ×_S Lᵀ (the axes S multiplied by Lᵀ: W'[…, j] = Σ_i W[…, i] L[i, j]):

    ‖EX‖²_F / N = ‖W' − Ŵ'‖²_F,   Ŵ' = Ŵ ×_S Lᵀ,

and the family's own SI of W' (truncated SVD, HOOI, CP-ALS, TT-SVD, …) is its SI for the output
error. Mapping back, Ŵ = Ŵ' ×_S L⁻ᵀ changes only the factor that carries S: F_in ← L⁻ᵀ F_in (for
low rank Ŵ₍ₘₐₜ₎ = U V'ᵀ L⁻¹ = U (L⁻ᵀV')ᵀ), so Ŵ stays in the family's format at the same ranks.
The factors are then rebalanced without changing Ŵ (:meth:`FactorizedLayer.balance_factors`).

**Exact and approximate cases.** When S holds every kernel axis of size > 1 — Linear layers, 1×1
convs, a Conv1d's (or a (1, k) conv's) low-rank columns — C_S is C itself and nothing is
approximated: for low rank, Ŵ is then the exact optimum min_{rank r} ‖(W − Ŵ)X‖_F (Eckart–Young
on W·L; SVD-LLM, Wang et al. 2025). Otherwise C_S is the average of C's diagonal blocks over the
offsets r ∉ S (:func:`input_moment`: the C_S ⊗ I_R closest to C in Frobenius norm), and the
truncation is optimal for that model of C (the cross-offset correlations of neighbouring pixels
are dropped).

**Damping.** C_S is rank-deficient whenever the calibration saw fewer than d_S inputs, dead
(always-zero) channels or constant padding; it is whitened as C_S + δ·mean(diag C_S)·I with
δ = ``damping`` (:data:`DAMPING` = 1e-2 by default), which is positive definite and changes the
objective by a ridge term δ·mean(diag C_S)·‖W − Ŵ‖²_F. The damped moment is divided by its mean
diagonal (1 + δ)·mean(diag C_S): a scalar leaves the optimum where it is, keeps W' on W's scale, and
makes white inputs (C_S ∝ I) give L = I, i.e. exactly plain SI (CP-ALS, for one, is not
scale-equivariant). A layer whose inputs were all zero (mean diagonal 0) is not whitened (plain SI).

**The approximate cases keep the better of the two.** Where C_S is a model of C (kernel axes of
size > 1 outside S), the model can lose to plain SI on a layer whose neighbouring patch entries are
strongly correlated (measured: a Tucker 3×3 conv of a small CNN, 0.77 against 0.73 relative output
error). There :func:`init_whitened` also runs plain SI and keeps whichever has the smaller exact
output error tr(E C Eᵀ) on the calibration inputs (the full Gram it holds), so whitened SI is never
worse than plain SI on them; the choice is logged. The exact cases are optimal as they are.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .spec import DenseSpec

if TYPE_CHECKING:
    from .base import FactorizedLayer

log = logging.getLogger("tdecomp")

DAMPING = 1e-2  # δ of the damped second moment C_S + δ·mean(diag C_S)·I


@dataclass
class LayerStats:
    """What calibration batches tell about one dense layer (:func:`tdecomp.calibrate`).

    ``gram`` (d, d), float64: Σ x xᵀ over the ``count`` input vectors (Linear: rows of the input,
    d = c_in) or patches (convs: d = c_in·Π kernel_size, ``F.unfold`` order) the layer multiplied by
    its weight. ``fisher``: Σ over batches of (∂L/∂W)², shape ``spec.weight_shape``, float64, where
    collected (:func:`tdecomp.fisher_information`). ``damping``: δ of :meth:`whitening`.
    """

    spec: DenseSpec
    gram: Tensor
    count: int = 0
    fisher: Tensor | None = None
    damping: float = DAMPING

    def add(self, inputs: Tensor) -> None:
        """Accumulate input vectors ``inputs`` (n, d) of one batch."""
        rows = inputs.detach().to(torch.float64)
        self.gram += rows.T @ rows
        self.count += rows.shape[0]

    @property
    def second_moment(self) -> Tensor:
        """C = Σ x xᵀ / count (d, d)."""
        return self.gram / max(self.count, 1)

    def whitening(self, axes: Sequence[int]) -> Tensor:
        """L (d_S, d_S), lower triangular, float64, with L Lᵀ = (C_S + δ·m·I)/((1 + δ)·m), m = mean(diag C_S),
        C_S the input moment over the weight ``axes`` S (:func:`input_moment`); the identity if m = 0."""
        moment = input_moment(self.second_moment, self.spec, axes)
        scale = float(moment.diagonal().mean())
        eye = torch.eye(moment.shape[0], dtype=moment.dtype, device=moment.device)
        if scale <= 0:
            return eye
        root, info = torch.linalg.cholesky_ex((moment + self.damping * scale * eye) / ((1 + self.damping) * scale))
        if info:
            raise ValueError(f"the input second moment of a {self.spec.kind} layer {self.spec.weight_shape} is "
                             f"singular at damping={self.damping}; calibrate with damping > 0")
        return root

    def output_error(self, weight: Tensor, approx: Tensor) -> float:
        """‖(W − Ŵ)X‖_F / ‖WX‖_F over the accumulated inputs X: tr(E G Eᵀ)/tr(W G Wᵀ), G = ``gram``,
        E = (W − Ŵ)₍₁₎, both (c_out, d) reshapings of ``spec.weight_shape`` tensors."""
        w = weight.to(self.gram).reshape(self.spec.out_channels, -1)
        e = w - approx.to(self.gram).reshape(w.shape)
        return math.sqrt(max(float((e @ self.gram * e).sum()), 0.0) / max(float((w @ self.gram * w).sum()), 1e-300))


def input_moment(moment: Tensor, spec: DenseSpec, axes: Sequence[int]) -> Tensor:
    """C_S (d_S, d_S): the second moment ``moment`` (d, d) of a layer's inputs restricted to the weight
    ``axes`` S (1 is c_in, 2 + a kernel axis a; in their order, as the input factor indexes them),
    averaged over the offsets of the other kernel axes R: C_S[s, s'] = mean_r C[(s, r), (s', r)].
    Exact (C_S = C, reordered) when R holds only size-1 axes."""
    shape = (spec.in_channels, *spec.kernel_size)  # the patch axes: weight axes 1, 2, …
    keep = [a - 1 for a in axes]
    rest = [a for a in range(len(shape)) if a not in keep]
    n = len(shape)
    c = moment.reshape(*shape, *shape).permute(*keep, *rest, *(n + a for a in keep), *(n + a for a in rest))
    d_s, d_r = math.prod(shape[a] for a in keep), math.prod(shape[a] for a in rest)
    return c.reshape(d_s, d_r, d_s, d_r).diagonal(dim1=1, dim2=3).mean(-1)


def whiten(weight: Tensor, axes: Sequence[int], root: Tensor) -> Tensor:
    """W ×_S Lᵀ: the weight ``axes`` S, flattened in order (d_S), multiplied by ``root`` L on the right."""
    back = tuple(range(weight.ndim - len(axes), weight.ndim))
    moved = weight.to(root).movedim(tuple(axes), back)
    return (moved.reshape(*moved.shape[: -len(axes)], -1) @ root).reshape(moved.shape).movedim(back, tuple(axes))


def unwhiten(factor: Tensor, dim: int, root: Tensor) -> Tensor:
    """L⁻ᵀ F along ``dim`` of the input factor F (its ``dim`` indexes the d_S input space), in F's dtype."""
    moved = factor.to(root).movedim(dim, 0)
    solved = torch.linalg.solve_triangular(root.T, moved.reshape(moved.shape[0], -1), upper=True)
    return solved.reshape(moved.shape).movedim(0, dim).to(factor.dtype)


@torch.no_grad()
def init_whitened(layer: FactorizedLayer, weight: Tensor, stats: LayerStats) -> None:
    """Whitened SI of ``layer`` from the dense ``weight`` and its inputs' ``stats``: the family's
    ``init_spectral`` of W ×_S Lᵀ (S = ``layer.input_axes``, L Lᵀ the damped C_S), then
    F_in ← L⁻ᵀ F_in on ``layer.input_factor()`` and ``layer.balance_factors()``; where C_S only models
    C, plain SI instead if its exact output error is smaller (module docstring)."""
    spec = layer.spec
    if stats.gram.shape[0] != spec.fan_in:
        raise ValueError(f"calibration statistics over {stats.gram.shape[0]} input features do not fit a "
                         f"{spec.kind} layer of weight {spec.weight_shape} (c_in·Π kernel = {spec.fan_in})")
    axes, (factor, dim) = layer.input_axes(spec), layer.input_factor()
    root, exact = stats.whitening(axes), is_exact(spec, axes)
    # the plain SI below draws what this one drew (CP seeds extra components at random)
    with contextlib.nullcontext() if exact else torch.random.fork_rng([weight.device] if weight.is_cuda else []):
        layer.init_spectral(whiten(weight, axes, root))
    factor.copy_(unwhiten(factor, dim, root))
    layer.balance_factors()
    if exact:
        return
    whitened = [f.detach().clone() for f in layer.factors()]
    error = stats.output_error(weight, layer.reconstruct())
    layer.init_spectral(weight)
    plain = stats.output_error(weight, layer.reconstruct())
    if plain < error:
        log.info("tdecomp: whitened SI of a %s %s kept plain SI (relative output error %.4g < %.4g)",
                 spec.kind, spec.weight_shape, plain, error)
        return
    for f, value in zip(layer.factors(), whitened):
        f.copy_(value)


def is_exact(spec: DenseSpec, axes: Sequence[int]) -> bool:
    """Whether the input moment over the weight ``axes`` is the full second moment: every kernel axis of
    size > 1 is among them."""
    return all(2 + a in axes for a in spec.factor_axes)
