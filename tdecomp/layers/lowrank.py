"""Matrix low-rank family: W = U Vᵀ, or U M Vᵀ when overcomplete (Khodak et al. 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_choice
from ..init import balanced_std
from .base import Cost, FactorizedLayer, matricize, register_family
from .spec import DenseSpec

# how a layer with rank r > k = min(m, n) (or, for "deep", any r) is built; see LowRankLayer
OVERCOMPLETE_MODES = ("balanced", "wide", "deep")
# rank from rank scale s: "min" r = s·min(m, n); "paper" (microsoft/fnl_paper frob.py:101,143)
# r = s·c_out·k_h for a conv, s·min(m, n) for a Linear
RANK_RULES = ("min", "paper")


def balanced_svd(matrix: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """Balanced rank-``r`` truncated SVD of ``matrix`` (*, m, n), batched over leading dims.

    With M = PΣQᵀ, returns U = P_rΣ_r^{1/2} (*, m, r) and V = Q_rΣ_r^{1/2} (*, n, r): U Vᵀ is the
    best rank-r approximation and UᵀU = VᵀV = Σ_r (the paper's spectral initialization).
    """
    p, s, qh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[..., None, :r].sqrt()
    return p[..., :r] * root, qh[..., :r, :].mT * root


def product_frobenius_sq(u: Tensor, v: Tensor) -> Tensor:
    """Σ over leading dims of ‖U Vᵀ‖²_F = tr((UᵀU)(VᵀV)) for U (*, m, r), V (*, n, r).

    O((m+n)r²) per matrix; U Vᵀ (m, n) is never formed.
    """
    return ((u.mT @ u) * (v.mT @ v)).sum()


@register_family("lowrank")
class LowRankLayer(FactorizedLayer):
    """W = U Vᵀ with U: (m, r), V: (n, r); for r > min(m, n) the overcomplete W = U M Vᵀ.

    A Linear weight is the matrix itself (m = c_out, n = c_in). A conv kernel (c_out, c_in, k_h,
    k_w) is matricized as W₍ₘₐₜ₎[(o, h), (i, w)] = W[o, i, h, w], i.e. (c_out·k_h) × (c_in·k_w);
    the forward is then a 1×k_w conv to r channels followed by a k_h×1 conv, and spectral init
    decomposes this same matricization (the official code's SI used a different one).

    ‖W‖²_F = tr((UᵀU)(VᵀV)), or tr(Mᵀ(UᵀU)M(VᵀV)) when overcomplete: O((m+n)r² + r³).
    Rank: an int r, a tuple ``(r,)``, or a float parameter ratio (ratios above what r = min(m, n)
    needs give the overcomplete form, the paper's "knowledge distillation without a teacher").

    Option ``overcomplete`` (:data:`OVERCOMPLETE_MODES`) says how r > k = min(m, n) is built:

    - ``"balanced"`` (default): U M Vᵀ with a r×r middle factor for r > k, balanced SI (below);
    - ``"wide"``: 2-factor U Vᵀ with r columns (the official code, frob.py:102-108); SI fills
      the first k columns and zero-pads the rest, which then get zero gradient from the loss,
      FD and WD alike, so the layer stays exactly rank k under training (random init moves them);
    - ``"deep"``: U M Vᵀ for every r, including r = k (the official ``--square``, frob.py:156),
      with M = I and the SI (zero-padded) √Σ-scaled outer factors.

    Option ``rank_rule`` (:data:`RANK_RULES`) maps a rank scale s to r.
    """

    def __init__(self, spec: DenseSpec, rank: Sequence[int], *, overcomplete: str = "balanced",
                 **kwargs: Any) -> None:
        self.mode = check_choice("overcomplete", overcomplete, OVERCOMPLETE_MODES)
        super().__init__(spec, rank, **kwargs)

    @classmethod
    def _init_options(cls, overcomplete: str = "balanced", **options: Any) -> dict[str, Any]:
        return {"overcomplete": overcomplete}

    @staticmethod
    def has_middle(mode: str, r: int, k: int) -> bool:
        """Whether a layer of rank ``r`` on a matrix with k = min(m, n) holds the r×r factor M."""
        return mode == "deep" or (mode == "balanced" and r > k)

    @staticmethod
    def _dims(spec: DenseSpec) -> tuple[int, int]:
        kh, kw = spec.kernel_size
        return spec.out_channels * kh, spec.in_channels * kw

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        return ("r",)

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        return (None,)

    @classmethod
    def _ranks_at_scale(
        cls, spec: DenseSpec, scale: float, rank_rule: str = "min", **options: Any
    ) -> tuple[int, ...]:
        """r = max(1, round(s·d)); d = min(m, n), or m = c_out·k_h for a conv under ``"paper"``."""
        check_choice("rank_rule", rank_rule, RANK_RULES)
        m, n = cls._dims(spec)
        base = m if rank_rule == "paper" and spec.is_conv else min(m, n)
        return (max(1, round(scale * base)),)

    @classmethod
    def _ranks_from_int(cls, spec: DenseSpec, rank: int, **options: Any) -> tuple[int, ...]:
        return (rank,)

    @classmethod
    def count_params(cls, spec: DenseSpec, rank, overcomplete: str = "balanced", **options: Any) -> int:
        (r,) = rank
        m, n = cls._dims(spec)
        return r * (m + n) + (r * r if cls.has_middle(overcomplete, r, min(m, n)) else 0)

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        (r,) = rank
        m, n = self._dims(self.spec)
        self.U = nn.Parameter(torch.empty(m, r, **factory))
        self.V = nn.Parameter(torch.empty(n, r, **factory))
        middle = self.has_middle(self.mode, r, min(m, n))
        self.M = nn.Parameter(torch.empty(r, r, **factory)) if middle else None

    @property
    def rank(self) -> tuple[int, ...]:
        return (self.U.shape[1],)

    @property
    def overcomplete(self) -> bool:
        """r > min(m, n): more rank than the matrix has (the collapsed layer is full-size dense)."""
        return self.rank[0] > min(self._dims(self.spec))

    def factors(self) -> list[Tensor]:
        return [self.U, self.V] if self.M is None else [self.U, self.M, self.V]

    def _left(self) -> Tensor:
        """U, or U M when overcomplete: the (m, r) left factor of W = (·) Vᵀ."""
        return self.U if self.M is None else self.U @ self.M

    def _matricize(self, weight: Tensor) -> Tensor:
        return matricize(weight, self.spec)

    def reconstruct(self) -> Tensor:
        o, i = self.spec.out_channels, self.spec.in_channels
        kh, kw = self.spec.kernel_size
        w = self._left() @ self.V.T
        return w.reshape(o, kh, i, kw).permute(0, 2, 1, 3).reshape(self.spec.weight_shape)

    def frobenius_sq(self) -> Tensor:
        """‖U Vᵀ‖²_F = tr((UᵀU)(VᵀV)) in O((m+n)r²); overcomplete (r ≥ min(m, n)): ‖U M Vᵀ‖²_F from
        the (m, n) product itself, O(mr(r+n)), cheaper than any r × r Gram identity (O(r³))."""
        if self.M is None:
            return product_frobenius_sq(self.U, self.V)
        return (self._left() @ self.V.T).pow(2).sum()

    def _forward_factorized(self, x: Tensor, pad: tuple[int, int]) -> Tensor:
        left = self._left()
        if not self.spec.is_conv:
            return self._mix(self._mix(x, self.V.T), left)
        (r,) = self.rank
        kh, kw = self.spec.kernel_size
        first = self.V.reshape(self.spec.in_channels, kw, r).permute(2, 0, 1).unsqueeze(2)
        second = left.reshape(self.spec.out_channels, kh, r).permute(0, 2, 1).unsqueeze(3)
        return self._conv(self._conv(x, first, "w", pad), second, "h", pad)

    @torch.no_grad()
    def init_spectral(self, weight: Tensor) -> None:
        """Balanced truncated SVD of the matricized ``weight``: U = U_rΣ_r^{1/2}, V = V_rΣ_r^{1/2}.

        Balanced overcomplete (r > k = min(m, n)): with W = PΣQᵀ and random A, B (k, r) with
        orthonormal rows, U = PΣ^{1/3}A, M = AᵀΣ^{1/3}B, V = QΣ^{1/3}B, so U M Vᵀ = PΣQᵀ = W
        exactly and the three factors are balanced (UᵀU = MMᵀ, MᵀM = VᵀV).

        Wide and deep: U, V = the balanced rank-min(r, k) SVD factors, zero-padded to r columns
        (frob.py:66-70,147-151), and M = I for deep, so U [M] Vᵀ is the rank-min(r, k) truncation.
        """
        matrix = self._matricize(weight.to(self.U.dtype))
        (r,) = self.rank
        if self.mode != "balanced" or self.M is None:
            u, v = balanced_svd(matrix, r)
            k = u.shape[1]
            for factor, value in ((self.U, u), (self.V, v)):
                factor.zero_()
                factor[:, :k] = value
            if self.M is not None:
                self.M.copy_(torch.eye(r, dtype=self.M.dtype, device=self.M.device))
            return
        p, s, qh = torch.linalg.svd(matrix, full_matrices=False)
        k = s.numel()
        a, b = (torch.linalg.qr(torch.randn(r, k, dtype=s.dtype, device=s.device))[0].T for _ in range(2))
        cube = s.pow(1.0 / 3.0)
        self.U.copy_((p * cube) @ a)
        self.M.copy_(a.T @ (cube[:, None] * b))
        self.V.copy_((qh.T * cube) @ b)

    def _random_init_terms(self) -> int:
        (r,) = self.rank
        return r if self.M is None else r * r

    @torch.no_grad()
    def init_random(self, std: float) -> None:
        """Balanced i.i.d. factors whose product has entry std ``std``; deep: U, V so, and M = I."""
        if self.mode != "deep":
            super().init_random(std)
            return
        s = balanced_std(std, self.rank[0], 2)
        self.U.normal_(0.0, s)
        self.V.normal_(0.0, s)
        self.M.copy_(torch.eye(self.rank[0], dtype=self.M.dtype, device=self.M.device))

    @torch.no_grad()
    def init_factors(self, kind: str) -> None:
        """The official per-factor (unbalanced) draws of U and Vᵀ; M = I (frob.py:110-111,156).

        - ``"kaiming-factors"``: ``kaiming_normal_`` on U (m, r) and Vᵀ (r, n), i.e.
          std √(2/r) for U and √(2/n) for V (pytorch_resnet_cifar10/trainer.py:116,
          EigenDamage-Pytorch/main_pretrain.py:78);
        - ``"fanout-factors"``: both N(0, 2/(c_out·k_h·k_w)) (EigenDamage-Pytorch/main_pretrain.py:57-63,
          there with the c_out of the previous conv by an off-by-one; here the layer's own).
        """
        (r,) = self.rank
        m, n = self._dims(self.spec)
        if kind == "kaiming-factors":
            std_u, std_v = math.sqrt(2.0 / r), math.sqrt(2.0 / n)
        else:
            kh, kw = self.spec.kernel_size
            std_u = std_v = math.sqrt(2.0 / (self.spec.out_channels * kh * kw))
        self.U.normal_(0.0, std_u)
        self.V.normal_(0.0, std_v)
        if self.M is not None:
            self.M.copy_(torch.eye(r, dtype=self.M.dtype, device=self.M.device))

    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: tuple[int, int, int, int]) -> Cost:
        """1×k_w conv c_in→r on the (h_in, w_out) grid, then k_h×1 conv r→c_out on (h_out, w_out);
        overcomplete: U M (m·r² MACs) per call."""
        (r,) = rank
        m, n = cls._dims(spec)
        h_in, _, h_out, w_out = grid
        left = (m * r * r, m * r) if r > min(m, n) else (0, 0)
        return Cost(h_in * w_out * r * n + h_out * w_out * r * m, h_in * w_out * r, *left, 2 + (left[0] > 0))

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...]) -> int:
        (r,) = rank
        m, n = cls._dims(spec)
        return m * n * r + (m * r * r if r > min(m, n) else 0)

    def inner(self, other: Sequence[Tensor]) -> Tensor:
        """⟨U Vᵀ, U'V'ᵀ⟩ = Σ (UᵀU') ∗ (VᵀV'); overcomplete: Σ (MᵀUᵀU'M') ∗ (VᵀV'). O((m+n)r² + r³)."""
        u, *m, v = other
        left = self.U.T @ u
        if self.M is not None:
            left = self.M.T @ left @ m[0]
        return (left * (self.V.T @ v)).sum()

    def balancedness(self) -> Tensor:
        """‖UᵀU − VᵀV‖_F; overcomplete: (‖UᵀU − MMᵀ‖²_F + ‖MᵀM − VᵀV‖²_F)^{1/2}.

        Gradient flow conserves UᵀU − VᵀV (the invariance U → UA⁻¹, V → VAᵀ); spectral init
        makes it 0.
        """
        if self.M is None:
            return torch.linalg.matrix_norm(self.U.T @ self.U - self.V.T @ self.V)
        d1 = self.U.T @ self.U - self.M @ self.M.T
        d2 = self.M.T @ self.M - self.V.T @ self.V
        return torch.linalg.matrix_norm(torch.stack([d1, d2])).norm()

    def singular_values(self) -> Tensor:
        """From U = Q_U R_U, V = Q_V R_V: the singular values of the small R_U [M] R_Vᵀ.

        O((m+n)r² + r³), W never formed.
        """
        r_u = torch.linalg.qr(self.U)[1]
        r_v = torch.linalg.qr(self.V)[1]
        core = r_u @ r_v.T if self.M is None else r_u @ self.M @ r_v.T
        return torch.linalg.svdvals(core)
