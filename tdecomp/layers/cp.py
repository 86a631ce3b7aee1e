"""CP (CANDECOMP/PARAFAC) family: W = Σ_r a_r ∘ b_r ∘ c_r ∘ d_r, stored in a tltorch ``CPTensor``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._decompositions import _hadamard_grams, cp_als
from .._tltorch import CPTensor, TltorchFormat
from .base import FactorizedLayer
from .cost import Cost, Grid
from .energy import EnergyCurve
from .registry import register_family
from .spec import DenseSpec

CP_FIT_POINTS = 12  # ranks at which a CP layer's fit curve is known (geometric in R, interpolated between)
CP_FIT_SWEEPS = 10  # ALS sweeps per fit of that curve (SI runs cp_als's own schedule)


def _khatri_rao(factors: list[Tensor]) -> Tensor:
    """A_1 ⊙ A_2 ⊙ … (Π n_k, R), row (j_1, j_2, …) = A_1[j_1] ∗ A_2[j_2] ∗ …, for A_k (n_k, R)."""
    out = factors[0]
    for f in factors[1:]:
        out = (out[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])
    return out


class CPFitCurve(EnergyCurve):
    """E(R) = 1 − ‖W − W_R‖²_F/‖W‖²_F of :func:`~tdecomp._decompositions.cp_als` on ``tensor`` (W as
    ``spec.tensor_shape``) at rank R ≤ R_max (the rank holding as many parameters as W). Fitted lazily
    at :data:`CP_FIT_POINTS` geometric ranks, made non-decreasing and linearly interpolated in between:
    a search for E(R) ≥ t fits only the ranks up to the first grid point that reaches t (ALS cost
    grows as R², so the high ranks a small budget never needs are never fitted)."""

    def __init__(self, spec: DenseSpec, tensor: Tensor) -> None:
        (self.size,) = CPLayer._ranks_at_scale(spec, 1.0)
        self.grid = sorted({round(r) for r in torch.logspace(0, math.log10(self.size), CP_FIT_POINTS).tolist()})
        self.tensor, self.total = tensor, tensor.square().sum()
        self.fits: list[float] = []  # E at grid[: len(fits)], running maximum

    def _fit(self, i: int) -> float:
        while len(self.fits) <= i:
            factors = cp_als(self.tensor, self.grid[len(self.fits)], n_iter=CP_FIT_SWEEPS)
            letters = "abcdefgh"[: self.tensor.ndim]
            approx = torch.einsum(",".join(f"{c}z" for c in letters) + f"->{letters}", *factors)
            fit = float(1 - (self.tensor - approx).square().sum() / self.total)
            self.fits.append(max([fit, *self.fits[-1:]]))
        return self.fits[i]

    def first(self) -> float:
        return self._fit(0)

    def smallest_rank(self, t: float) -> int:
        if t >= 1:
            return self.size
        for i, r in enumerate(self.grid):
            if self._fit(i) >= t:
                if i == 0:
                    return r
                lo, e_lo, e_hi = self.grid[i - 1], self._fit(i - 1), self._fit(i)
                return lo + math.ceil((r - lo) * (t - e_lo) / max(e_hi - e_lo, 1e-300))
        return self.size


@register_family("cp")
class CPLayer(FactorizedLayer):
    """Rank-R CP weight: factors A_k (n_k, R) for the modes (c_out, c_in, *kernel modes > 1).

    The modes are :attr:`DenseSpec.tensor_shape`: (c_out, c_in, k_h, k_w) for a 3×3 conv,
    (c_out, c_in, k) for a Conv1d or a (1, k) Conv2d, (c_out, c_in) for Linear and 1×1 (a size-1
    kernel axis gets no factor). The CP weights λ are a buffer fixed at 1 (the scale lives in the
    balanced factors), so the layer has R·Σn_k parameters. Forward on a conv: 1-tap conv c_in→R,
    one depthwise conv over the kernel modes with the rank-1 kernels a_h,r ⊗ a_w,r (⊗ …) on the R
    channels (none without kernel modes), 1-tap conv R→c_out.
    ‖W‖²_F = λᵀ(∗_k A_kᵀA_k)λ: O(Σ n_k R²).

    Spectral init: the bounded ALS of :func:`tdecomp._decompositions.cp_als`.
    Rank: an int R, ``(R,)``, or a float parameter ratio.

    Training with Frobenius decay: call :func:`tdecomp.rebalance` after each optimizer step (the
    trainer does under ``reg=fd``); it equalizes each component's column norms ‖a_r⁽ᵏ⁾‖ over
    the modes, the rescalings FD cannot see (layers of more than two modes).
    """

    tltorch = TltorchFormat("cp", rank=lambda rank: rank[0])
    factor_inits = ("kaiming-factors",)

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        return ("R",)

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        return (None,)

    @classmethod
    def _ranks_at_scale(cls, spec: DenseSpec, scale: float, **options: Any) -> tuple[int, ...]:
        dense_equivalent = spec.weight_numel / sum(spec.tensor_shape)
        return (max(1, round(scale * dense_equivalent)),)

    @classmethod
    def _ranks_from_int(cls, spec: DenseSpec, rank: int, **options: Any) -> tuple[int, ...]:
        return (rank,)

    @classmethod
    def energy_curves(cls, spec: DenseSpec, weight: Tensor, **options: Any) -> list[EnergyCurve | None]:
        """The ALS fit's gains over R (:class:`CPFitCurve`): CP has no SVD whose truncation it is."""
        return [CPFitCurve(spec, weight.reshape(spec.tensor_shape))]

    @classmethod
    def count_params(cls, spec: DenseSpec, rank, **options: Any) -> int:
        return rank[0] * sum(spec.tensor_shape)

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        (r,) = rank
        shape = self.spec.tensor_shape
        factors = [nn.Parameter(torch.empty(n, r, **factory)) for n in shape]
        self.decomposition = CPTensor(torch.ones(r, **factory), factors, shape=shape, rank=r)

    @property
    def rank(self) -> tuple[int, ...]:
        return (self.decomposition.rank,)

    def factors(self) -> list[Tensor]:
        return list(self.decomposition.factors)

    def reconstruct(self) -> Tensor:
        """W₍₁₎ = (A_out diag(λ)) (A_in ⊙ A_h ⊙ A_w)ᵀ (⊙: Khatri–Rao): one GEMM, numel(W)·R MACs.

        (A 5-operand einsum took a contraction path 78× slower than the dense conv on VGG-19 512→512 @4px.)
        """
        a_out, *rest = self.decomposition.factors
        return ((a_out * self.decomposition.weights) @ _khatri_rao(rest).T).reshape(self.spec.weight_shape)


    def frobenius_sq(self) -> Tensor:
        lam = self.decomposition.weights
        return lam @ _hadamard_grams(list(self.decomposition.factors)) @ lam

    def _forward_factorized(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        a_out, a_in, *spatial = self.decomposition.factors
        z = self._mix(x, a_in.T)
        if spatial:
            # One depthwise conv with the rank-1 kernels a_h,r ⊗ a_w,r: k_h+k_w → k_h·k_w MACs per
            # channel, but one op and one stored activation fewer than separate k_h×1, 1×k_w.
            kernel = spatial[0].T
            for a in spatial[1:]:
                kernel = kernel[..., None] * a.T.reshape(a.shape[1], *(1,) * (kernel.ndim - 1), -1)
            z = self._conv(z, kernel.unsqueeze(1), range(len(spatial)), pad, groups=self.rank[0])
        return self._mix(z, a_out * self.decomposition.weights)

    @torch.no_grad()
    def init_spectral(self, weight: Tensor) -> None:
        self.decomposition.weights.fill_(1.0)
        tensor = weight.to(self.decomposition.weights.dtype).reshape(self.spec.tensor_shape)
        for p, f in zip(self.decomposition.factors, cp_als(tensor, self.rank[0])):
            p.copy_(f)

    def input_factor(self) -> tuple[Tensor, int]:
        """A_in (c_in, R): whitened SI whitens the c_in mode."""
        return self.decomposition.factors[1], 0

    def _random_init_terms(self) -> int:
        return self.rank[0]

    def _balanced_norms(self) -> Tensor:
        """Column norms ‖a_r⁽ᵏ⁾‖, (N, R): each component r is rescaled on its own (exact for W)."""
        return torch.stack([f.norm(dim=0) for f in self.decomposition.factors])

    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: Grid, **options: Any) -> Cost:
        """1-tap conv c_in→R on the input grid, depthwise conv over the kernel modes and 1-tap
        conv R→c_out on the output grid; per call the R·Π k depthwise kernel and λ-scaled A_out."""
        (r,) = rank
        d = len(spec.factor_kernel)
        kernel = r * math.prod(spec.factor_kernel) if d else 0
        macs = grid.positions() * r * spec.in_channels + grid.out * r * spec.out_channels
        activations = grid.positions() * r
        if d:
            macs += grid.out * kernel
            activations += grid.out * r
        fixed = kernel + r * spec.out_channels
        ops = 3 + d  # two mixes and the λ scaling (+ d − 1 outer products and the depthwise conv)
        return Cost(macs, activations, fixed, fixed, ops)

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...], **options: Any) -> int:
        return spec.weight_numel * rank[0]

    @torch.no_grad()
    def init_random(self, std: float) -> None:
        self.decomposition.weights.fill_(1.0)
        super().init_random(std)

    @torch.no_grad()
    def init_factors(self, kind: str) -> None:
        """``"kaiming-factors"``: each factor N(0, 2/fan_in) as the map it applies in the forward —
        A_in √(2/c_in) (c_in → R), each kernel factor A_j √(2/k_j) (as if its taps were their own
        depthwise k_j-tap conv), A_out √(2/R) (R → c_out); λ = 1."""
        self._check_factor_init(kind)
        self.decomposition.weights.fill_(1.0)
        a_out, a_in, *spatial = self.decomposition.factors
        a_in.normal_(0.0, math.sqrt(2.0 / a_in.shape[0]))
        for a in spatial:
            a.normal_(0.0, math.sqrt(2.0 / a.shape[0]))
        a_out.normal_(0.0, math.sqrt(2.0 / self.rank[0]))

    def inner(self, other: Sequence[Tensor]) -> Tensor:
        """⟨W, W'⟩ = λᵀ (∗_k A_kᵀA'_k) λ, λ the (fixed, shared) CP weights. O(Σ n_k R²)."""
        cross = torch.stack([a.T @ b for a, b in zip(self.decomposition.factors, other)]).prod(0)
        lam = self.decomposition.weights
        return lam @ cross @ lam

    def balancedness(self) -> Tensor:
        """(Σ_r Σ_k (‖a_r⁽ᵏ⁾‖² − ‖a_r⁽ᵏ⁺¹⁾‖²)²)^{1/2} over adjacent modes k, k+1.

        Rescaling a_r⁽ʲ⁾ → c·a_r⁽ʲ⁾, a_r⁽ᵏ⁾ → a_r⁽ᵏ⁾/c leaves W unchanged, so gradient flow conserves
        every difference of squared column norms ‖a_r⁽ʲ⁾‖² − ‖a_r⁽ᵏ⁾‖² (the spread of component
        r's norm over its modes); spectral init (balanced ALS components) makes them 0.
        """
        norms_sq = torch.stack([f.pow(2).sum(0) for f in self.decomposition.factors])  # (N, R)
        return (norms_sq[1:] - norms_sq[:-1]).norm()

    def singular_values(self) -> Tensor:
        """W₍ₘₐₜ₎ = (A_out ⊙ A_rows) diag(λ) (A_in ⊙ A_cols)ᵀ (⊙: Khatri–Rao over the row and column
        modes of :func:`~tdecomp.layers.spec.matricize`, e.g. A_h and A_w); QR of the two Khatri–Rao
        products, then the SVD of an R × R matrix. O((m + n) R² + R³) for W₍ₘₐₜ₎ (m, n)."""
        a_out, a_in, *spatial = self.decomposition.factors
        p = self.spec.n_row_modes
        left, right = _khatri_rao([a_out, *spatial[:p]]), _khatri_rao([a_in, *spatial[p:]])
        r_left, r_right = torch.linalg.qr(left)[1], torch.linalg.qr(right)[1]
        return torch.linalg.svdvals((r_left * self.decomposition.weights) @ r_right.T)

