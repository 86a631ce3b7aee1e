"""The one interface every factorized layer implements, and the family registry.

A family is one subclass of :class:`FactorizedLayer` registered with :func:`register_family`.
It declares how ranks map to parameters (``_ranks_at_scale``, ``count_params``, ``max_ranks``)
and how its factors reconstruct, convolve, decay and initialize; everything else — rank parsing
and budgets, bias, the dense fallback forward, ``to_dense``, parameter counts — lives here once.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._budget import allocate
from .._registry import Registry
from .._validation import check_choice
from ..init import FACTOR_INITS, LAYER_INIT_METHODS, balanced_std
from .spec import Axis, DenseSpec


class RankScale(float):
    """A rank given as the family's rank scale s rather than a parameter ratio, e.g.
    ``factorize(conv, "lowrank", RankScale(1/3), rank_rule="paper")`` has r = round(c_out·k_h/3)
    as microsoft/fnl_paper frob.py:143 does."""

    __slots__ = ()


Rank = int | float | Sequence[int]
IMPLEMENTATIONS = ("factorized", "reconstructed", "auto")

# Cost model of ``implementation="auto"`` (see :meth:`FactorizedLayer.choose_implementation`), in
# multiply-accumulate (MAC) equivalents: an activation element stored for backward costs a write
# now and reads in backward (memory-bound, ~MEMORY_COST MACs); a separate op costs dispatch,
# allocation and a layout reorder in oneDNN/cuDNN (~OP_COST MACs). Calibrated on CPU with
# ``tdecomp bench --suite layers``; they only matter near the break-even point.
MEMORY_COST = 4
OP_COST = 1 << 16

FAMILIES: Registry[type[FactorizedLayer]] = Registry("family")


def register_family(name: str):
    """Class decorator registering a :class:`FactorizedLayer` subclass under ``name``.

    A new family (e.g. tensor ring) is one file with ``@register_family("tr")`` on its class.
    """

    def decorator(cls: type[FactorizedLayer]) -> type[FactorizedLayer]:
        FAMILIES.register(name)(cls)
        cls.family = name
        return cls

    return decorator


def available_families() -> tuple[str, ...]:
    """Names of the registered families, sorted."""
    return FAMILIES.names()


def get_family(name: str) -> type[FactorizedLayer]:
    """The layer class registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    return FAMILIES.get(name)


def matricize(weight: Tensor, spec: DenseSpec) -> Tensor:
    """The (c_out·k_h) × (c_in·k_w) matrix W₍ₘₐₜ₎[(o, h), (i, w)] = W[o, i, h, w] of a dense weight.

    ``weight`` has shape ``spec.weight_shape``; a Linear weight (c_out, c_in) is returned as is.
    This is the matricization the low-rank family factorizes, and the one whose singular values
    :meth:`FactorizedLayer.singular_values` reports for every family (so spectra are comparable).
    """
    o, i = spec.out_channels, spec.in_channels
    kh, kw = spec.kernel_size
    return weight.reshape(o, i, kh, kw).permute(0, 2, 1, 3).reshape(o * kh, i * kw)


class Cost(NamedTuple):
    """Forward cost of one implementation of a layer, for the ``"auto"`` choice and benchmarks.

    Per sample (an image for a conv, a row for a Linear): ``macs`` and stored ``activations``
    (elements kept for backward). Per call: ``fixed_macs`` and ``fixed_memory`` (elements) of
    building per-call weights (e.g. W itself), and the number of ``ops``.
    """

    macs: int
    activations: int
    fixed_macs: int
    fixed_memory: int
    ops: int

    def total_macs(self, batch: int) -> int:
        """Multiply-accumulates of one forward on ``batch`` samples: N·macs + fixed_macs."""
        return batch * self.macs + self.fixed_macs

    def total(self, batch: int) -> int:
        """MAC equivalents N·(macs + κ_m·act) + fixed_macs + κ_m·fixed_memory + κ_op·ops."""
        memory = batch * self.activations + self.fixed_memory
        return self.total_macs(batch) + MEMORY_COST * memory + OP_COST * self.ops


def conv_grid(spec: DenseSpec, height: int, width: int) -> tuple[int, int, int, int]:
    """``(h_in, w_in, h_out, w_out)``: input and dense output spatial sizes; all 1 for a Linear.

    h_out = ⌊(h_in + pad_top + pad_bottom − d_h(k_h − 1) − 1) / s_h⌋ + 1, likewise for w. The
    per-axis stages of the factorized forward see (h_in, w_out) or (h_out, w_in) grids; h_in, w_in
    include the padding when :meth:`DenseSpec.pad_input` applies it up front.
    """
    if not spec.is_conv:
        return (1, 1, 1, 1)
    top, bottom, left, right = spec.pads
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    h_out = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    w_out = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    if spec.padding_mode != "zeros" or top != bottom or left != right:  # as DenseSpec.pad_input
        height, width = height + top + bottom, width + left + right
    return (height, width, h_out, w_out)



@lru_cache(maxsize=4096)
def _auto_choice(
    cls: type[FactorizedLayer], spec: DenseSpec, rank: tuple[int, ...], batch: int, grid: tuple[int, int, int, int]
) -> str:
    """``"factorized"`` or ``"reconstructed"``, whichever :class:`Cost` is lower (ties: factorized).

    A pure function of shapes (never of weight values), so caching it cannot go stale.
    """
    try:
        factorized = cls._factorized_cost(spec, rank, grid).total(batch)
        reconstructed = cls._reconstructed_cost(spec, rank, grid).total(batch)
    except NotImplementedError:
        return "factorized"
    return "factorized" if factorized <= reconstructed else "reconstructed"


class Factorized(nn.Module, ABC):
    """Anything whose weights are products of factors and can be Frobenius-decayed.

    :func:`tdecomp.frobenius_decay` and :func:`tdecomp.param_groups` recognise modules by this
    type, so new factorized modules (e.g. attention) join the regularizer without edits there.
    """

    @abstractmethod
    def frobenius_sq(self) -> Tensor:
        """Σ ‖W‖²_F over the module's reconstructed weights, from factor Gram identities."""

    def factor_parameters(self) -> list[nn.Parameter]:
        """The parameters that are factors (everything except biases)."""
        return [p for name, p in self.named_parameters() if not name.endswith("bias")]

    @property
    def num_params(self) -> int:
        """Number of parameters the module holds (factors and bias)."""
        return sum(p.numel() for p in self.parameters())


class FactorizedLayer(Factorized):
    """A dense ``nn.Linear``/``nn.Conv2d`` whose weight is a low-rank, CP, Tucker or TT product.

    Args:
        spec: geometry of the dense layer it replaces (:class:`DenseSpec`).
        rank: explicit ranks in the family's own terms (see :meth:`resolve_rank`).
        implementation: ``"factorized"`` convolves/multiplies by the factors in sequence;
            ``"reconstructed"`` builds W and runs the dense op (cheaper for tiny batches or
            ranks near full); ``"auto"`` (default) picks one per call by :meth:`choose_implementation`.

    Shapes: a Linear layer maps ``(*, c_in) → (*, c_out)``; a conv ``(N, c_in, H, W) →
    (N, c_out, H', W')`` exactly as the dense layer with weight :meth:`reconstruct` would.
    Construction initializes the factors at once (random, dense default scale) so a layer never
    holds uninitialized memory; :meth:`from_dense` then applies the requested init.
    """

    family: ClassVar[str]

    def __init__(
        self,
        spec: DenseSpec,
        rank: Sequence[int],
        *,
        implementation: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.implementation = check_choice("implementation", implementation, IMPLEMENTATIONS)
        self._build(tuple(rank), {"device": device, "dtype": dtype})
        if spec.has_bias:
            self.bias = nn.Parameter(torch.empty(spec.out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    # ------------------------------------------------------------------ family contract
    @classmethod
    @abstractmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        """What each entry of an explicit rank tuple means (its length is the tuple's length)."""

    @classmethod
    @abstractmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        """Largest meaningful rank per entry (``None``: unbounded, e.g. overcomplete)."""

    @classmethod
    def _feasible(cls, spec: DenseSpec, ranks: tuple[int, ...]) -> tuple[int, ...]:
        """Lower ranks that the other ranks make unreachable (default: none are coupled)."""
        return ranks

    @classmethod
    @abstractmethod
    def _ranks_at_scale(cls, spec: DenseSpec, scale: float, **options: Any) -> tuple[int, ...]:
        """Ranks at a rank scale ``scale ≥ 0``, non-decreasing in ``scale`` (used for budgets)."""

    @classmethod
    @abstractmethod
    def _ranks_from_int(cls, spec: DenseSpec, rank: int, **options: Any) -> tuple[int, ...]:
        """Ranks for a single int ``rank``."""

    @classmethod
    @abstractmethod
    def count_params(cls, spec: DenseSpec, rank: Sequence[int]) -> int:
        """Weight parameters (bias excluded) of a layer with these ranks."""

    @abstractmethod
    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        """Create the (uninitialized) factor parameters for ``rank``."""

    @property
    @abstractmethod
    def rank(self) -> tuple[int, ...]:
        """The ranks this layer uses."""

    @abstractmethod
    def factors(self) -> list[Tensor]:
        """The factor tensors whose (multilinear) product is the weight."""

    @abstractmethod
    def reconstruct(self) -> Tensor:
        """The full weight, shape ``spec.weight_shape``, differentiable w.r.t. the factors."""

    @abstractmethod
    def _forward_factorized(self, x: Tensor, pad: tuple[int, int]) -> Tensor:
        """Apply the weight as a sequence of factor ops (no bias); ``x`` already padded as needed."""

    @abstractmethod
    def init_spectral(self, weight: Tensor) -> None:
        """Set the factors to the family's decomposition of ``weight`` (shape ``spec.weight_shape``)."""

    @abstractmethod
    def _random_init_terms(self) -> int:
        """Number of factor products summed in each reconstructed entry (for :func:`balanced_std`)."""

    # ------------------------------------------------------------------ cost model (optional)
    # A family without these still works: ``"auto"`` then always runs ``"factorized"``.
    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: tuple[int, int, int, int]) -> Cost:
        """:class:`Cost` of :meth:`_forward_factorized` on one sample of spatial ``grid`` (:func:`conv_grid`)."""
        raise NotImplementedError(f"family {cls.family!r} has no cost model")

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...]) -> int:
        """MACs of one :meth:`reconstruct` call."""
        raise NotImplementedError(f"family {cls.family!r} has no cost model")

    # ------------------------------------------------------------------ dynamics (analysis/)
    # Not abstract so that families written before them stay valid; the built-in families
    # override all three with factor-only computations.
    def inner(self, other: Sequence[Tensor]) -> Tensor:
        """⟨W, W'⟩_F, where W' is the weight this layer would have with ``other`` as its factors.

        ``other`` matches :meth:`factors` entry by entry (same shapes, e.g. a detached snapshot
        of this layer's factors at an earlier step). Families compute it from cross-Gram
        matrices of the two factor sets, never reconstructing W or W'; ``inner(factors())``
        equals :meth:`frobenius_sq`. Scalar tensor.
        """
        raise NotImplementedError(f"family {self.family!r} does not implement inner()")

    def balancedness(self) -> Tensor:
        """How far the factors are from balanced: a norm of quantities gradient flow conserves.

        Each family sums ‖D‖²_F over the conserved Gram differences D of its adjacent factor
        pairs and returns the square root (its docstring gives D). Gradient flow on any loss of
        W alone (including Frobenius decay) leaves every D unchanged; plain weight decay λ on the
        factors shrinks them as e^{−2λt}. Scalar tensor, 0 for balanced factors.
        """
        raise NotImplementedError(f"family {self.family!r} does not implement balancedness()")

    def singular_values(self) -> Tensor:
        """Singular values (descending) of W's matricization :func:`matricize`.

        Default: reconstruct W and take ``svdvals`` of the (c_out·k_h) × (c_in·k_w) matrix,
        O(numel(W)·min(c_out·k_h, c_in·k_w)); families with orthogonalizable factors override it
        with QR of the factors and an SVD of a small core.
        """
        return torch.linalg.svdvals(matricize(self.reconstruct(), self.spec))

    # ------------------------------------------------------------------ construction
    @classmethod
    def resolve_rank(cls, spec: DenseSpec, rank: Rank, **options: Any) -> tuple[int, ...]:
        """Turn a user ``rank`` into explicit ranks.

        - ``float``: target ratio of the factorized weight's parameters to the dense weight's
          (as in tensorly-torch); the family's rank scale is bisected to the closest count.
        - :class:`RankScale` ``s``: the family's ranks at rank scale s directly (unclamped).
        - ``int``: the family's single rank (see each family).
        - tuple of ints: one entry per :meth:`rank_names`.
        Ranks above :meth:`max_ranks` carry no extra expressiveness and are clamped with a warning.
        """
        if isinstance(rank, bool):
            raise TypeError(f"rank must be a float, an int or a tuple of ints, got {rank!r}")
        if isinstance(rank, float):
            if not math.isfinite(rank) or rank <= 0:
                raise ValueError(f"rank must be a positive parameter ratio, got {rank!r}")
            if isinstance(rank, RankScale):
                return cls._ranks_at_scale(spec, float(rank), **options)
            (ranks,) = allocate(
                [lambda s: cls._ranks_at_scale(spec, s, **options)],
                lambda _, r: cls.count_params(spec, r, **options),
                rank * spec.weight_numel,
            )
            return ranks
        if isinstance(rank, int):
            if rank <= 0:
                raise ValueError(f"rank must be a positive int, got {rank!r}")
            ranks = cls._ranks_from_int(spec, rank, **options)
        elif isinstance(rank, Sequence) and not isinstance(rank, str):
            names = cls.rank_names(spec)
            if len(rank) != len(names):
                raise ValueError(
                    f"rank for family {cls.family!r} on a {spec.kind} layer must have "
                    f"{len(names)} entries {names}, got {len(rank)}: {tuple(rank)!r}"
                )
            if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rank):
                raise ValueError(f"rank entries must be positive ints, got {tuple(rank)!r}")
            ranks = tuple(rank)
        else:
            raise TypeError(f"rank must be a float, an int or a tuple of ints, got {rank!r}")
        return cls._clamp(spec, ranks, warn=True)

    @classmethod
    def _clamp(cls, spec: DenseSpec, ranks: Sequence[int], warn: bool = False) -> tuple[int, ...]:
        limits = cls.max_ranks(spec)
        clamped = cls._feasible(
            spec, tuple(r if m is None else max(1, min(r, m)) for r, m in zip(ranks, limits))
        )
        if warn and clamped != tuple(ranks):
            warnings.warn(
                f"{cls.family} rank {tuple(ranks)} exceeds the maximum {limits} for weight shape "
                f"{spec.weight_shape}; using {clamped}",
                stacklevel=4,
            )
        return clamped

    @classmethod
    def from_dense(
        cls,
        module: nn.Module,
        rank: Rank,
        init: str = "spectral",
        implementation: str = "auto",
        **options: Any,
    ) -> FactorizedLayer:
        """Factorize ``module`` (``nn.Linear`` or ``nn.Conv2d``); see :func:`tdecomp.factorize`."""
        check_choice("init", init, LAYER_INIT_METHODS)
        spec = DenseSpec.from_module(module)
        weight = module.weight.detach()
        layer = cls(
            spec,
            cls.resolve_rank(spec, rank, **options),
            implementation=implementation,
            device=weight.device,
            dtype=weight.dtype,
            **cls._init_options(**options),
        )
        if init == "spectral":
            layer.init_spectral(weight)
        elif init in FACTOR_INITS:
            layer.init_factors(init)
        else:
            layer.init_random(float(weight.std()))
        if module.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(module.bias)
        return layer

    @classmethod
    def _init_options(cls, **options: Any) -> dict[str, Any]:
        """The family options its constructor takes (default: none; they only shape the ranks)."""
        return {}

    def init_factors(self, kind: str) -> None:
        """Per-factor draws :data:`~tdecomp.init.FACTOR_INITS` (defined by the low-rank family)."""
        raise ValueError(f"init={kind!r} is defined for the lowrank family only, not {self.family!r}; "
                         "use init='random' or 'spectral'")

    @torch.no_grad()
    def init_random(self, std: float) -> None:
        """Balanced i.i.d. N(0, s²) factors whose reconstruction has entry std ``std``."""
        factors = self.factors()
        s = balanced_std(std, self._random_init_terms(), len(factors))
        for f in factors:
            f.normal_(0.0, s)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """PyTorch's default dense init scale for the product, and its default bias init."""
        self.init_random(self.spec.default_std)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.spec.fan_in)
            self.bias.uniform_(-bound, bound)

    # ------------------------------------------------------------------ cost model
    @classmethod
    def _reconstructed_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: tuple[int, int, int, int]) -> Cost:
        """Build W once per call (``fixed_macs``; W is the ``fixed_memory``), then the dense op."""
        _, _, h_out, w_out = grid
        macs = h_out * w_out * spec.weight_numel
        return Cost(macs, 0, cls._reconstruct_macs(spec, rank), spec.weight_numel, 2)

    def _batch_and_grid(self, input_shape: Sequence[int]) -> tuple[int, tuple[int, int, int, int]]:
        """Samples N (all leading dims; an unbatched conv input is one) and :func:`conv_grid`."""
        if self.spec.is_conv:
            return math.prod(input_shape[:-3]), conv_grid(self.spec, *input_shape[-2:])
        return math.prod(input_shape[:-1]), conv_grid(self.spec, 1, 1)

    def macs(self, input_shape: Sequence[int], implementation: str | None = None) -> int:
        """Multiply-accumulates of one forward on an input of ``input_shape`` (:meth:`Cost.total_macs`).

        ``implementation`` defaults to the one :meth:`forward` runs. The dense layer's count is
        N·h_out·w_out·numel(W); the ratio of the two is the benchmarks' FLOP ratio.
        """
        impl = self.choose_implementation(input_shape) if implementation is None else implementation
        check_choice("implementation", impl, IMPLEMENTATIONS[:2])
        batch, grid = self._batch_and_grid(input_shape)
        cost = self._factorized_cost if impl == "factorized" else self._reconstructed_cost
        return cost(self.spec, self.rank, grid).total_macs(batch)

    def choose_implementation(self, input_shape: Sequence[int]) -> str:
        """The implementation :meth:`forward` runs on an input of ``input_shape``.

        For ``"auto"``, the one with the lower forward cost (the backward pass costs ≈ 2× the
        forward in both, so the choice holds for fwd+bwd):

            factorized:    N·(Σ_stages MACs + κ_m·Σ_stages stored activations) + per-call kernel
                           building (e.g. Tucker's G ×₃ U_h ×₄ U_w) + κ_op·#ops
            reconstructed: N·h_out·w_out·numel(W) + MACs(reconstruct) + κ_m·numel(W) + 2κ_op

        N = samples (batch × any extra leading dims), κ_m = ``MEMORY_COST``, κ_op = ``OP_COST``;
        each family's :meth:`_factorized_cost` counts its stages on the grids they see (strides
        included). Factorized wins for ratios < 1 on all but tiny N·h·w; reconstructed wins for
        e.g. overcomplete low-rank layers or batch-1 inference on small feature maps. The choice
        depends on shapes only — cached per shape, never on weights, which change every step.
        """
        if self.implementation != "auto":
            return self.implementation
        batch, grid = self._batch_and_grid(input_shape)
        return _auto_choice(type(self), self.spec, self.rank, batch, grid)

    # ------------------------------------------------------------------ the interface
    def forward(self, x: Tensor) -> Tensor:
        if self.choose_implementation(x.shape) == "reconstructed":
            return self.spec.functional(x, self.reconstruct(), self.bias)
        pad = (0, 0)
        if self.spec.is_conv:
            x, pad = self.spec.pad_input(x)
        out = self._forward_factorized(x, pad)
        if self.bias is None:
            return out
        return out + (self.bias.view(1, -1, 1, 1) if self.spec.is_conv else self.bias)

    def to_dense(self) -> nn.Module:
        """An ``nn.Linear``/``nn.Conv2d`` computing exactly this layer's function."""
        bias = None if self.bias is None else self.bias.detach()
        return self.spec.build(self.reconstruct().detach(), bias)

    @property
    def param_ratio(self) -> float:
        """Parameters held relative to the dense layer (both counting weight and bias)."""
        return self.num_params / self.spec.num_params

    def extra_repr(self) -> str:
        s = self.spec
        geometry = f"{s.in_channels}→{s.out_channels}"
        if s.is_conv:
            geometry += f", kernel={s.kernel_size}, stride={s.stride}, padding={s.padding!r}"
            if s.dilation != (1, 1):
                geometry += f", dilation={s.dilation}"
        return (
            f"family={self.family}, {s.kind}({geometry}), rank={self.rank}, "
            f"params={self.num_params} ({self.param_ratio:.3f} of dense)"
        )

    # ------------------------------------------------------------------ helpers for families
    def _mix(self, x: Tensor, weight: Tensor) -> Tensor:
        """Channel mixing by ``weight`` (out, in): a matmul on the last dim, or a 1×1 conv."""
        if self.spec.is_conv:
            return F.conv2d(x, weight[:, :, None, None])
        return F.linear(x, weight)

    def _conv(
        self, x: Tensor, weight: Tensor, axis: Axis, pad: tuple[int, int], groups: int = 1
    ) -> Tensor:
        """Spatial convolution on ``axis`` with the dense layer's stride/padding/dilation there."""
        return self.spec.axis_conv(x, weight, axis, pad, groups)
