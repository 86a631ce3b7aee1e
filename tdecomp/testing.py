"""Testing helpers (as in tensorly.testing): relative-error assertions with readable failures."""

from __future__ import annotations

import torch
from torch import Tensor


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """‖actual − expected‖_F / ‖expected‖_F (absolute error when ``expected`` is zero)."""
    diff = (actual - expected).norm()
    scale = expected.norm()
    return float(diff / scale) if scale > 0 else float(diff)


def assert_rel_close(actual: Tensor, expected: Tensor, tol: float, what: str = "tensor") -> None:
    """Assert same shape and relative Frobenius error below ``tol``."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = relative_error(actual.detach(), expected.detach())
    assert err < tol, f"{what}: relative error {err:.3e} ≥ {tol:.1e}"


@torch.no_grad()
def hosvd_error(tensor: Tensor, ranks: tuple[int, ...]) -> float:
    """Relative error of the truncated HOSVD (leading left singular vectors of each unfolding)."""
    factors = []
    for mode, r in enumerate(ranks):
        unfolding = tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)
        factors.append(torch.linalg.svd(unfolding, full_matrices=False)[0][:, :r])
    approx = tensor
    for mode, u in enumerate(factors):  # project every mode onto its subspace: X ×_k U_k U_kᵀ
        approx = torch.tensordot(u @ u.T, approx.movedim(mode, 0), dims=([1], [0])).movedim(0, mode)
    return relative_error(approx, tensor)
