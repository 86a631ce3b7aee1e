"""Initialization shared by all factorized families.

Two methods (:data:`INIT_METHODS`):

- ``"spectral"`` (SI, Khodak et al. 2021): decompose the dense weight W₀ the layer replaces —
  a freshly built module's default init, or a trained weight for compression. Each family
  implements its decomposition (truncated SVD, CP-ALS, HOOI, TT-SVD) in ``init_spectral``; the
  scale is then spread evenly over the factors (:func:`balance_norms`), the tensor analog of
  the balanced SVD factors U = U_r Σ^{1/2}, V = V_r Σ^{1/2}.
- ``"random"``: i.i.d. Gaussian factors whose product has the dense weight's variance
  (:func:`balanced_std`).

The low-rank family also takes the official code's unbalanced per-factor draws
(:data:`FACTOR_INITS`), the "low-rank" baseline of Khodak et al.'s tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

INIT_METHODS = ("spectral", "random")
# the official code's unbalanced per-factor draws (low-rank family only; see LowRankLayer.init_factors)
FACTOR_INITS = ("kaiming-factors", "fanout-factors")
LAYER_INIT_METHODS = INIT_METHODS + FACTOR_INITS


def balanced_std(target_std: float, n_terms: int, n_factors: int) -> float:
    """Per-factor std so that a sum of ``n_terms`` products of ``n_factors`` i.i.d. N(0, s²)
    entries has variance ``target_std²``.

    Each entry of the reconstruction is Σ_{t=1}^{T} Π_{k=1}^{K} x_{t,k}, so its variance is
    T·s^{2K}; solving T·s^{2K} = σ² gives s = (σ²/T)^{1/(2K)}. Every factor gets the same s
    (balanced), unlike tensorly-torch's TT init whose product variance is orders too small.
    """
    return (target_std**2 / n_terms) ** (1.0 / (2 * n_factors))


@torch.no_grad()
def balance_norms(tensors: Sequence[Tensor]) -> None:
    """Rescale ``tensors`` in place to equal Frobenius norms, keeping their product's scale.

    For a multilinear reconstruction W = f(T₁, …, T_K), scaling T_k by c_k with Π c_k = 1 leaves
    W unchanged; the balanced choice sets every ‖T_k‖ to (Π_k ‖T_k‖)^{1/K}.
    """
    norms = [t.norm() for t in tensors]
    if any(n == 0 for n in norms):
        return
    target = math.exp(sum(math.log(float(n)) for n in norms) / len(norms))
    for t, n in zip(tensors, norms):
        t.mul_(target / n)
