"""Initialization shared by all factorized families.

Two methods that read only the weight (:data:`INIT_METHODS`):

- ``"spectral"`` (SI, Khodak et al. 2021): decompose the dense weight W₀ the layer replaces —
  a freshly built module's default init, or a trained weight for compression. Each family
  implements its decomposition (truncated SVD, CP-ALS, HOOI, TT-SVD) in ``init_spectral``; the
  scale is then spread evenly over the factors (:func:`balance_norms`), the tensor analog of
  the balanced SVD factors U = U_r Σ^{1/2}, V = V_r Σ^{1/2}.
- ``"random"``: i.i.d. Gaussian factors whose product has the dense weight's variance
  (:func:`balanced_std`).

One that also reads the layer's inputs (:data:`DATA_INITS`): ``"whitened"``, SI of the weight
whitened by the second moment of the inputs a calibration saw (:mod:`tdecomp.layers.whitening`),
so the truncation minimizes the output error ‖(W − Ŵ)X‖ (Linear and conv layers, every family).

Per-factor draws (:data:`FACTOR_INITS`): the official code's unbalanced draws, the "low-rank"
baseline of Khodak et al.'s tables, which the low-rank family takes; ``"kaiming-factors"``
generalized to every built-in family (each factor N(0, 2/fan_in) with the fan-in of the map it
applies in the family's forward; each family's ``init_factors`` gives its factors' stds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

INIT_METHODS = ("spectral", "random")
# the official code's unbalanced per-factor draws (a family lists those it defines in ``factor_inits``)
# "fairseq-factors": each factor drawn as the fairseq fork draws the dense module (Linear U(−0.1, 0.1),
# Embedding N(0, 0.1); Transformer-PyTorch/singleprocess_train.py:57,61)
FACTOR_INITS = ("kaiming-factors", "fanout-factors", "fairseq-factors")
LAYER_INIT_METHODS = INIT_METHODS + FACTOR_INITS
# inits that read calibration statistics of the layer's inputs (tdecomp.calibrate)
DATA_INITS = ("whitened",)
# every init a factorized Linear/conv layer (a run config's ``init``) takes
FACTORIZED_INIT_METHODS = INIT_METHODS + DATA_INITS + FACTOR_INITS


def balanced_std(target_std: float, n_terms: int, n_factors: int) -> float:
    """Per-factor std so that a sum of ``n_terms`` products of ``n_factors`` i.i.d. N(0, s²)
    entries has variance ``target_std²``.

    Each entry of the reconstruction is Σ_{t=1}^{T} Π_{k=1}^{K} x_{t,k}, so its variance is
    T·s^{2K}; solving T·s^{2K} = σ² gives s = (σ²/T)^{1/(2K)}. Every factor gets the same s
    (balanced), unlike tensorly-torch's TT init whose product variance is orders too small.
    """
    return (target_std**2 / n_terms) ** (1.0 / (2 * n_factors))


def equalizing_scales(norms: Tensor) -> Tensor:
    """Scales c (same shape as ``norms``, (K, …)) that make K norms equal along dim 0, Π_k c_k = 1.

    c_k = (Π_j ‖T_j‖)^{1/K} / ‖T_k‖: the geometric mean over the K tensors, so a multilinear
    product of the rescaled tensors is unchanged, and Σ_k c_k²‖T_k‖² is the smallest over all
    such rescalings (AM–GM). Columns (…) holding a zero norm get c = 1. Stays on the device.
    """
    logs = norms.log()
    scales = (logs.mean(0, keepdim=True) - logs).exp()
    return torch.where((norms > 0).all(0, keepdim=True), scales, torch.ones_like(scales))


@torch.no_grad()
def balance_norms(tensors: Sequence[Tensor]) -> None:
    """Rescale ``tensors`` in place to equal Frobenius norms, keeping their product's scale.

    For a multilinear reconstruction W = f(T₁, …, T_K), scaling T_k by c_k with Π c_k = 1 leaves
    W unchanged; the balanced choice sets every ‖T_k‖ to (Π_k ‖T_k‖)^{1/K}
    (:func:`equalizing_scales`; nothing changes if a tensor is zero).
    """
    scales = equalizing_scales(torch.stack([t.norm() for t in tensors]))
    for t, c in zip(tensors, scales):
        t.mul_(c)
