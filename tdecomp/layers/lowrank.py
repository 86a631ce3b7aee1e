"""Matrix low-rank family: W = U Vᵀ, or U M Vᵀ when overcomplete (Khodak et al. 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._decompositions import product_frobenius_sq
from .._svd import truncated_svd
from ..init import FACTOR_INITS, balanced_std
from .attention.geometry import AttentionSpec
from .attention.heads import HeadProducts, register_heads
from .base import FactorizedLayer
from .cost import Cost, Grid
from .energy import EnergyCurve
from .options import FamilyOption
from .registry import register_family
from .spec import DenseSpec, matricize

# how a layer with rank r > k = min(m, n) (or, for "deep", any r) is built; see LowRankLayer
OVERCOMPLETE = FamilyOption(
    "overcomplete", str, "balanced", "how a rank r > min(m, n) is built: balanced U M Vᵀ (exact SI), wide "
    "2-factor U Vᵀ (SI zero-pads; the official code), deep U M Vᵀ at every r (M = I; the official --square)",
    ("balanced", "wide", "deep"))
# rank from rank scale s: "min" r = s·min(m, n); "paper" (microsoft/fnl_paper frob.py:101,143)
# r = s·c_out·k_h for a conv, s·min(m, n) for a Linear
RANK_RULE = FamilyOption(
    "rank_rule", str, "min", "rank from a rank scale s: min r = s·min(m, n); paper r = s·c_out·k_h for a conv "
    "(the official frob.py:143), s·min(m, n) for a Linear", ("min", "paper"))


def balanced_svd(matrix: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """Balanced rank-``r`` truncated SVD of ``matrix`` (*, m, n), batched over leading dims.

    With M = PΣQᵀ, returns U = P_rΣ_r^{1/2} (*, m, r) and V = Q_rΣ_r^{1/2} (*, n, r): U Vᵀ is the
    best rank-r approximation and UᵀU = VᵀV = Σ_r (the paper's spectral initialization); for large
    matrices a randomized SVD approximates it (:func:`tdecomp._svd.truncated_svd`).
    """
    p, s, qh = truncated_svd(matrix, r)
    root = s[..., None, :].sqrt()
    return p * root, qh.mT * root


@register_family("lowrank")
class LowRankLayer(FactorizedLayer):
    """W = U Vᵀ with U: (m, r), V: (n, r); for r > min(m, n) the overcomplete W = U M Vᵀ.

    A Linear weight is the matrix itself (m = c_out, n = c_in). A conv kernel is matricized by
    :func:`~tdecomp.layers.spec.matricize`: (c_out·k_h) × (c_in·k_w) with W₍ₘₐₜ₎[(o, h), (i, w)] =
    W[o, i, h, w] for a 2-D kernel, c_out × (c_in·k) for a 1-D (or (1, k)) kernel, c_out × c_in for
    1×1, (c_out·k_d) × (c_in·k_h·k_w) for 3-D. The forward is a conv over the column modes
    (1×k_w; k; k_h×k_w) c_in → r, then one over the row modes (k_h×1; a 1-tap mix; k_d) r → c_out;
    spectral init decomposes this same matricization (the official code's SI used a different one).

    ‖W‖²_F = tr((UᵀU)(VᵀV)), or tr(Mᵀ(UᵀU)M(VᵀV)) when overcomplete: O((m+n)r² + r³).
    Rank: an int r, a tuple ``(r,)``, or a float parameter ratio (ratios above what r = min(m, n)
    needs give the overcomplete form, the paper's "knowledge distillation without a teacher").

    Option ``overcomplete`` (:data:`OVERCOMPLETE`) says how r > k = min(m, n) is built:

    - ``"balanced"`` (default): U M Vᵀ with a r×r middle factor for r > k, balanced SI (below);
    - ``"wide"``: 2-factor U Vᵀ with r columns (the official code, frob.py:102-108); SI fills
      the first k columns and zero-pads the rest, which then get zero gradient from the loss,
      FD and WD alike, so the layer stays exactly rank k under training (random init moves them);
    - ``"deep"``: U M Vᵀ for every r, including r = k (the official ``--square``, frob.py:156),
      with M = I and the SI (zero-padded) √Σ-scaled outer factors.

    Option ``rank_rule`` (:data:`RANK_RULE`) maps a rank scale s to r.

    Training with Frobenius decay: U Vᵀ trains with plain FD as in the paper; the overcomplete
    U M Vᵀ has three factors, and :func:`tdecomp.rebalance` (called after each optimizer step,
    by the trainer under ``reg=fd``) equalizes their norms, which FD cannot see.
    """

    has_overcomplete_form = True
    options = (OVERCOMPLETE, RANK_RULE)
    factor_inits = FACTOR_INITS

    @property
    def mode(self) -> str:
        """The ``overcomplete`` option this layer was built with."""
        return self.family_options[OVERCOMPLETE.name]

    @staticmethod
    def has_middle(mode: str, r: int, k: int) -> bool:
        """Whether a layer of rank ``r`` on a matrix with k = min(m, n) holds the r×r factor M."""
        return mode == "deep" or (mode == "balanced" and r > k)

    @staticmethod
    def _dims(spec: DenseSpec) -> tuple[int, int]:
        return spec.matrix_shape

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        return ("r",)

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        return (None,)

    @classmethod
    def _ranks_at_scale(
        cls, spec: DenseSpec, scale: float, rank_rule: str = RANK_RULE.default, **options: Any
    ) -> tuple[int, ...]:
        """r = max(1, round(s·d)); d = min(m, n), or under ``"paper"`` d = c_out·k_h for a conv (k_h its
        first kernel axis, size 1 included: frob.py's (c_out·k_h) × (c_in·k_w) matrix, not ours)."""
        RANK_RULE.check(rank_rule, cls.family)
        base = spec.out_channels * spec.kernel_size[0] if rank_rule == "paper" and spec.is_conv else min(
            cls._dims(spec))
        return (max(1, round(scale * base)),)

    @classmethod
    def _ranks_from_int(cls, spec: DenseSpec, rank: int, **options: Any) -> tuple[int, ...]:
        return (rank,)

    @classmethod
    def energy_curves(cls, spec: DenseSpec, weight: Tensor, **options: Any) -> list[EnergyCurve | None]:
        """σ_j² of the matricization :func:`~tdecomp.layers.spec.matricize`: the rank-r U Vᵀ of SI is
        its best rank-r approximation (Eckart–Young), keeping Σ_{j≤r} σ_j²."""
        total = weight.reshape(spec.tensor_shape).square().sum()
        return [EnergyCurve.of_unfolding(matricize(weight, spec), total)]

    @classmethod
    def count_params(cls, spec: DenseSpec, rank, overcomplete: str = OVERCOMPLETE.default, **options: Any) -> int:
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
        """W₍ₘₐₜ₎ = U Vᵀ (or U M Vᵀ) folded back: rows (o, row modes), columns (i, column modes)."""
        spec = self.spec
        p, kernel = spec.n_row_modes, spec.factor_kernel
        w = (self._left() @ self.V.T).reshape(spec.out_channels, *kernel[:p], spec.in_channels, *kernel[p:])
        return w.movedim(1 + p, 1).reshape(spec.weight_shape)

    def frobenius_sq(self) -> Tensor:
        """‖U Vᵀ‖²_F = tr((UᵀU)(VᵀV)) in O((m+n)r²); overcomplete (r ≥ min(m, n)): ‖U M Vᵀ‖²_F from
        the (m, n) product itself, O(mr(r+n)), cheaper than any r × r Gram identity (O(r³))."""
        if self.M is None:
            return product_frobenius_sq(self.U, self.V)
        return (self._left() @ self.V.T).pow(2).sum()

    def _forward_factorized(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        left = self._left()
        if not self.spec.is_conv:
            return self._mix(self._mix(x, self.V.T), left)
        (r,) = self.rank
        spec = self.spec
        p, kernel, d = spec.n_row_modes, spec.factor_kernel, len(spec.factor_kernel)
        first = self.V.reshape(spec.in_channels, *kernel[p:], r).movedim(-1, 0)  # (r, c_in, *col modes)
        second = left.reshape(spec.out_channels, *kernel[:p], r).movedim(-1, 1)  # (c_out, r, *row modes)
        z = self._conv(x, first, range(p, d), pad)
        return self._conv(z, second, range(p), pad)

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

    @classmethod
    def input_axes(cls, spec: DenseSpec) -> tuple[int, ...]:
        """c_in and the column kernel modes of the matricization, the rows of V: whitened SI is then the
        exact output-error optimum for Linear, 1×1 and 1-D kernels (all their modes are columns)."""
        return (1, *(2 + a for a in spec.factor_axes[spec.n_row_modes:]))

    def input_factor(self) -> tuple[Tensor, int]:
        return self.V, 0

    @torch.no_grad()
    def balance_factors(self) -> None:
        """The balanced SI factors (UᵀU = VᵀV; the balanced U M Vᵀ) of the current W: W has rank ≤ r, so
        :meth:`init_spectral` of it is exact."""
        self.init_spectral(self.reconstruct())

    def _pads_missing_directions(self) -> bool:
        """Wide and deep keep the official zero-padded SI as it is (frob.py:66-70,147-151)."""
        return self.mode == "balanced"

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
        - ``"fanout-factors"``: both N(0, 2/(c_out·∏kernel_size)) (EigenDamage-Pytorch/main_pretrain.py:57-63,
          there with the c_out of the previous conv by an off-by-one; here the layer's own);
        - ``"fairseq-factors"``: both U(−0.1, 0.1), the fairseq fork's Linear init applied to each
          factor (Transformer-PyTorch/singleprocess_train.py:57, fairseq/models/transformer.py:542).
        """
        (r,) = self.rank
        m, n = self._dims(self.spec)
        if kind == "fairseq-factors":
            self.U.uniform_(-0.1, 0.1)
            self.V.uniform_(-0.1, 0.1)
        else:
            if kind == "kaiming-factors":
                std_u, std_v = math.sqrt(2.0 / r), math.sqrt(2.0 / n)
            else:
                std_u = std_v = math.sqrt(2.0 / (self.spec.out_channels * math.prod(self.spec.kernel_size)))
            self.U.normal_(0.0, std_u)
            self.V.normal_(0.0, std_v)
        if self.M is not None:
            self.M.copy_(torch.eye(r, dtype=self.M.dtype, device=self.M.device))

    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: Grid,
                         overcomplete: str = OVERCOMPLETE.default, **options: Any) -> Cost:
        """Column-mode conv c_in→r on the grid with those modes strided (e.g. (h_in, w_out)), then
        row-mode conv r→c_out on the output grid; with a middle factor (:meth:`has_middle`) U M
        (m·r² MACs) per call."""
        (r,) = rank
        m, n = cls._dims(spec)
        mid = grid.positions(range(spec.n_row_modes, len(spec.factor_kernel)))
        left = (m * r * r, m * r) if cls.has_middle(overcomplete, r, min(m, n)) else (0, 0)
        return Cost(mid * r * n + grid.out * r * m, mid * r, *left, 2 + (left[0] > 0))

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...], overcomplete: str = OVERCOMPLETE.default,
                          **options: Any) -> int:
        """(U M) Vᵀ: m·n·r, plus m·r² for U M with a middle factor."""
        (r,) = rank
        m, n = cls._dims(spec)
        return m * n * r + (m * r * r if cls.has_middle(overcomplete, r, min(m, n)) else 0)

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


@register_heads(LowRankLayer)
class LowRankHeads(HeadProducts):
    """Independent per-head factors M_h = U_h V_hᵀ, U (H, m, r), V (H, n, r), r ≤ d_h.

    SI: the balanced truncated SVD of every product, as :class:`~tdecomp.layers.LowRankLayer`.
    """

    default = True  # the paper's per-head QKᵀ/OVᵀ factors

    @classmethod
    def rank_names(cls) -> tuple[str, ...]:
        return ("r",)

    @classmethod
    def max_ranks(cls, spec: AttentionSpec) -> tuple[int, ...]:
        return (spec.head_dim,)  # the dense products have rank ≤ d_h

    @classmethod
    def effective_rank(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> tuple[int, ...]:
        return (min(rank[0], m, n),)

    @classmethod
    def count_params(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> int:
        (r,) = cls.effective_rank(heads, m, n, rank)
        return heads * (m + n) * r

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        (r,) = rank
        self.U = nn.Parameter(torch.empty(self.heads, self.m, r, **factory))
        self.V = nn.Parameter(torch.empty(self.heads, self.n, r, **factory))

    @property
    def rank(self) -> tuple[int, ...]:
        return (self.U.shape[-1],)

    def left(self) -> Tensor:
        return self.U

    def right(self) -> Tensor:
        return self.V

    @torch.no_grad()
    def init_spectral(self, products: Tensor) -> None:
        u, v = balanced_svd(products.to(self.U.dtype), self.rank[0])
        self.U.copy_(u)
        self.V.copy_(v)

    @torch.no_grad()
    def init_random(self, std: float) -> None:
        s = balanced_std(std, self.rank[0], 2)
        self.U.normal_(0.0, s)
        self.V.normal_(0.0, s)
