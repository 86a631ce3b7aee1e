"""Tensor decompositions used for spectral initialization (private; families call these).

Every SVD goes through :func:`tdecomp._svd.truncated_svd` (exact, or randomized for large
matrices). TT-SVD is tensorly's sweep under a local pytorch backend with that SVD; HOOI is ours
(tensorly's sweeps always take full SVDs); CP is our own ALS: tensorly's ``parafac`` SVD init
asks for a full SVD of every unfolding (154 GB for a 256×256×3×3 kernel at rank 113) and its ALS
costs ~0.15 s per sweep there; ours seeds each component from the matrix SVD of the
output-channel unfolding and runs a bounded ridge ALS.

Large tensors — whose mode-0 unfolding takes the randomized SVD (:func:`tdecomp._svd.is_large`,
e.g. WRN-28-10's 640-channel kernels) — run shorter sweep schedules (``*_SWEEPS_LARGE``): the
HOSVD / SVD seed is a warm start, and late sweeps there cost seconds each for little (a default-
initialized 640×640×3×3 kernel at 1/15 of its parameters, relative error: HOOI 0.9393 after 1
sweep, 0.9357 after 3, 0.9343 after 10; CP-ALS 0.9409 after 5, 0.9375 after 10, 0.9348 after 25).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._svd import is_large, truncated_svd
from ._tltorch import pytorch_backend


@dataclass(frozen=True)
class Sweeps:
    """At most ``max_sweeps`` sweeps; stop once the relative error ‖X − X̂‖/‖X‖ changes by < ``tol``."""

    max_sweeps: int
    tol: float

    @staticmethod
    def for_tensor(tensor: Tensor, rank: int, small: Sweeps, large: Sweeps) -> Sweeps:
        """``large`` when the mode-0 unfolding at ``rank`` takes the randomized SVD, else ``small``."""
        return large if is_large(tensor.shape[0], tensor.numel() // tensor.shape[0], rank) else small


CP_SWEEPS, CP_SWEEPS_LARGE = Sweeps(25, 1e-6), Sweeps(10, 1e-3)
HOOI_SWEEPS, HOOI_SWEEPS_LARGE = Sweeps(10, 1e-7), Sweeps(5, 1e-3)


# ---------------------------------------------------------------------------------- CP
def _rank_one_chain(t: Tensor) -> list[Tensor]:
    """Batched rank-1 approximation of ``t`` (k, n_1, …, n_d) by successive leading SVDs.

    Returns d vectors (k, n_j) whose outer products approximate each of the k tensors; the
    scale is carried by the first vector.
    """
    k, n1 = t.shape[0], t.shape[1]
    if t.ndim == 2:
        return [t]
    u, s, vh = torch.linalg.svd(t.reshape(k, n1, -1), full_matrices=False)
    head = u[:, :, 0] * s[:, :1]
    return [head, *_rank_one_chain(vh[:, 0, :].reshape(k, *t.shape[2:]))]


def _cp_svd_seed(tensor: Tensor, rank: int) -> list[Tensor]:
    """CP factors (n_m, R) seeded by the SVD of the mode-0 unfolding X₍₀₎ = Σ σ_j u_j v_jᵀ.

    Component j is σ_j u_j ∘ (rank-1 approximation of v_j reshaped to the remaining modes); for a
    matrix this is exactly the truncated SVD. Components beyond the unfolding's rank are small
    random vectors for ALS to use.
    """
    n0 = tensor.shape[0]
    u, s, vh = truncated_svd(tensor.reshape(n0, -1), rank)
    k = s.numel()
    rest = _rank_one_chain(vh[:k].reshape(k, *tensor.shape[1:]))
    factors = [u[:, :k] * s[:k], *(v.T for v in rest)]
    if k < rank:
        scale = 0.1 * s[k - 1].abs().pow(1.0 / tensor.ndim) / math.sqrt(max(tensor.shape))
        factors = [
            torch.cat([f, scale * torch.randn(f.shape[0], rank - k, dtype=f.dtype, device=f.device)], 1)
            for f in factors
        ]
    return [f.contiguous() for f in factors]


def _mttkrp(tensor: Tensor, factors: Sequence[Tensor], mode: int) -> Tensor:
    """Matricized tensor times Khatri–Rao product: X₍ₘ₎ (⊙_{k≠m} A_k), shape (n_m, R)."""
    letters = string.ascii_lowercase[: tensor.ndim]
    operands = [f"{c}z" for i, c in enumerate(letters) if i != mode]
    expr = f"{letters},{','.join(operands)}->{letters[mode]}z"
    return torch.einsum(expr, tensor, *(f for i, f in enumerate(factors) if i != mode))


def product_frobenius_sq(u: Tensor, v: Tensor) -> Tensor:
    """Σ over leading dims of ‖U Vᵀ‖²_F = tr((UᵀU)(VᵀV)) for U (*, m, r), V (*, n, r).

    O((m+n)r²) per matrix; U Vᵀ (m, n) is never formed.
    """
    return ((u.mT @ u) * (v.mT @ v)).sum()


def _hadamard_grams(factors: Sequence[Tensor], skip: int | None = None) -> Tensor:
    """∗_{k≠skip} A_kᵀ A_k: the Gram of the Khatri–Rao product of the other factors (R, R)."""
    out = None
    for i, f in enumerate(factors):
        if i != skip:
            g = f.T @ f
            out = g if out is None else out * g
    return out


@torch.no_grad()
def cp_als(
    tensor: Tensor, rank: int, n_iter: int | None = None, tol: float | None = None, ridge: float = 1e-6
) -> list[Tensor]:
    """Bounded CP-ALS: W ≈ Σ_r a_r⁽¹⁾ ∘ … ∘ a_r⁽ᴺ⁾, returned as N factors (n_m, R), balanced.

    Each sweep solves A_m ← X₍ₘ₎(⊙_{k≠m}A_k) (∗_{k≠m}A_kᵀA_k + εI)⁻¹ with a ridge ε relative
    to the Gram's mean diagonal, which keeps the factors bounded when components degenerate.
    Stops after ``n_iter`` sweeps or when the relative error changes by less than ``tol``
    (default :data:`CP_SWEEPS`, :data:`CP_SWEEPS_LARGE` for large tensors). The returned
    components have equal column norms across modes (the CP analog of balanced SVD).
    """
    sweeps = Sweeps.for_tensor(tensor, rank, CP_SWEEPS, CP_SWEEPS_LARGE)
    n_iter = sweeps.max_sweeps if n_iter is None else n_iter
    tol = sweeps.tol if tol is None else tol
    x = tensor
    factors = _cp_svd_seed(x, rank)
    norm_sq = x.pow(2).sum()
    eye = torch.eye(rank, dtype=x.dtype, device=x.device)
    previous = math.inf
    for _ in range(n_iter):
        for m in range(x.ndim):
            gram = _hadamard_grams(factors, skip=m)
            gram = gram + ridge * gram.diagonal().mean().clamp_min(1e-30) * eye
            rhs = _mttkrp(x, factors, m)
            factors[m] = torch.linalg.solve(gram, rhs.T).T
        # ‖X − W‖² = ‖X‖² − 2⟨X, W⟩ + ‖W‖², with ⟨X, W⟩ from the last MTTKRP
        inner = (rhs * factors[-1]).sum()
        fit_sq = _hadamard_grams(factors).sum()
        error = float((norm_sq - 2 * inner + fit_sq).clamp_min(0).sqrt() / norm_sq.sqrt())
        if abs(previous - error) < tol:
            break
        previous = error
    return _balance_components(factors)


def _balance_components(factors: list[Tensor]) -> list[Tensor]:
    """Give every mode of component r the same column norm (Π_m ‖a_r⁽ᵐ⁾‖)^{1/N}."""
    norms = torch.stack([f.norm(dim=0) for f in factors])  # (N, R)
    target = norms.clamp_min(1e-30).log().mean(0).exp()
    return [f * (target / n.clamp_min(1e-30)) for f, n in zip(factors, norms)]


# ---------------------------------------------------------------------------------- Tucker / TT
def _unfold(tensor: Tensor, mode: int) -> Tensor:
    """Mode-``mode`` unfolding X₍ₘ₎ (n_m, Π_{k≠m} n_k), the other modes in order."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def _project(tensor: Tensor, factors: Sequence[Tensor], skip: int | None = None) -> Tensor:
    """X ×_k U_kᵀ for every mode k ≠ ``skip``: mode k shrinks from n_k to r_k."""
    for k, u in enumerate(factors):
        if k != skip:
            tensor = torch.tensordot(tensor, u, dims=([k], [0])).movedim(-1, k)
    return tensor


def _leading_vectors(matrix: Tensor, rank: int) -> Tensor:
    """The ``rank`` leading left singular vectors of ``matrix`` (n, ·), each signed so its
    largest-magnitude entry is positive (tensorly's ``svd_flip``, so results match its HOOI)."""
    u = truncated_svd(matrix, rank)[0]
    rows = u.abs().argmax(0)
    return u * torch.sign(u[rows, torch.arange(u.shape[1], device=u.device)])


@torch.no_grad()
def tucker_hooi(
    tensor: Tensor, ranks: Sequence[int], n_iter: int | None = None, tol: float | None = None
) -> tuple[Tensor, list[Tensor]]:
    """HOOI from the HOSVD (a warm start, so never worse than HOSVD): core (r_1…r_N), factors (n_k, r_k).

    HOSVD: U_k = leading r_k left singular vectors of X₍ₖ₎. Each sweep sets, mode by mode,
    U_k = leading r_k left singular vectors of (X ×_{j≠k} U_jᵀ)₍ₖ₎; G = X ×_k U_kᵀ. The fit error
    √(‖X‖² − ‖G‖²)/‖X‖ (the factors are orthonormal) stops the sweeps once it changes by < ``tol``
    (default :data:`HOOI_SWEEPS`, :data:`HOOI_SWEEPS_LARGE` for large tensors). Ranks must not
    exceed the mode sizes (callers clamp).
    """
    sweeps = Sweeps.for_tensor(tensor, ranks[0], HOOI_SWEEPS, HOOI_SWEEPS_LARGE)
    n_iter = sweeps.max_sweeps if n_iter is None else n_iter
    tol = sweeps.tol if tol is None else tol
    factors = [_leading_vectors(_unfold(tensor, k), r) for k, r in enumerate(ranks)]
    norm_sq, previous = tensor.square().sum(), math.inf
    for _ in range(n_iter):
        for k, r in enumerate(ranks):
            factors[k] = _leading_vectors(_unfold(_project(tensor, factors, skip=k), k), r)
        error = float((norm_sq - _project(tensor, factors).square().sum()).abs().sqrt() / norm_sq.sqrt())
        if abs(previous - error) < tol:
            break
        previous = error
    return _project(tensor, factors), factors


@torch.no_grad()
def tt_svd(tensor: Tensor, ranks: Sequence[int]) -> list[Tensor]:
    """TT-SVD with internal ranks ``ranks``: cores (r_{k-1}, n_k, r_k), r_0 = r_N = 1.

    tensorly's sweep with our :func:`~tdecomp._svd.truncated_svd` (exact or randomized per size).
    """
    from tensorly.decomposition import tensor_train

    with pytorch_backend():
        cores = tensor_train(tensor, rank=[1, *ranks, 1], svd=_tensorly_svd)
    return list(cores)


def _tensorly_svd(matrix: Tensor, n_eigenvecs: int, **_: object) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`~tdecomp._svd.truncated_svd` with tensorly's SVD-function signature."""
    return truncated_svd(matrix, n_eigenvecs)
