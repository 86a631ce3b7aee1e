"""The official Table-2 tensor block: a dense depthwise k×k conv, then a TT or Tucker 1×1 conv.

Khodak et al.'s WRN-28-10 TT/Tucker rows (microsoft/fnl_paper make.py:146-203) run the
deficient-efficient code, whose ``TensorTrain``/``Tucker`` convs (models/decomposed.py:49-167)
replace a k×k conv c_in → c_out by

    z = depthwise_k×k(x)                 (groups = c_in, dense, stride/padding/dilation of the conv)
    y = conv1×1(z, P),  P (c_out, c_in) = reshape(T),  T (d₀, d₁, d₂) a TT or Tucker tensor,

where (d₀, d₁, d₂) is P's row-major reshape into 3 near-equal modes (decomposed.py:13-39,
:func:`tensorize_shape`) and the ranks come from a rank scale s (:meth:`SeparableCarrier.ranks_at_scale`).
The dense equivalent is W[o, i] = P[o, i]·D[i] (D the depthwise kernel), so ``to_dense`` is exact.

The tensor T is one of tdecomp's own TT/Tucker layers (its SI, Frobenius norm, rebalancing)
holding the 3-way tensor as the weight of a Conv1d-shaped :class:`DenseSpec`; each family that
serves the block says how in its own file (its :class:`SeparableCarrier`, with the official ranks);
that layer is never run as a conv.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._budget import allocate
from .._validation import check_choice
from .base import FactorizedLayer
from .factorized import Factorized
from .ranks import RankScale
from .registry import available_families, get_family
from .spec import CONV_TYPES, DenseSpec

ORDER = 3  # blocks.py:264-273 passes dimensions=3 to TensorTrain/Tucker
# what the pointwise tensor decomposes at init (both decompose a fresh dense draw, as the official code)
SEPARABLE_INITS = ("random", "spectral")


def _closest_divisor(n: int, d: int) -> int:
    """decomposed.py:41-46: the smallest divisor of n that is ≥ d (n itself if n < d)."""
    if n < d:
        return n
    while n % d:
        d += 1
    return d


def tensorize_shape(c_out: int, c_in: int, order: int = ORDER) -> tuple[int, ...]:
    """Modes of the row-major reshape of a (c_out, c_in) matrix, decomposed.py:13-32.

    With N = c_out·c_in and e = N^{1/order}: ``order`` modes e if e is an integer, else
    d_j = the smallest divisor ≥ round(e) of what is left, the last mode takes the rest.
    E.g. (160, 16) → (16, 16, 10), (640, 640) → (80, 80, 64).
    """
    n = c_out * c_in
    equal = math.exp((1.0 / order) * math.log(n))
    if abs(round(equal) - equal) < 1e-6:
        return (int(round(equal)),) * order
    dims = []
    for _ in range(order - 1):
        divisor = _closest_divisor(n, int(round(equal)))
        dims.append(divisor)
        n //= divisor
    return (*dims, n)


class SeparableCarrier(ABC):
    """How a family holds the block's pointwise tensor T (d₀, d₁, d₂) as one of its own layers.

    A family serves the block by setting its ``separable`` class attribute to a subclass (the
    carrier lives in the family's file); :func:`separable_families` lists those that do.
    """

    @staticmethod
    @abstractmethod
    def spec(dims: Sequence[int]) -> DenseSpec:
        """The layer geometry whose family tensor has the modes ``dims`` (see :func:`carrier_spec`)."""

    @staticmethod
    @abstractmethod
    def to_modes(weight: Tensor) -> Tensor:
        """The carrier layer's ``reconstruct()`` (its ``spec.weight_shape``) as the (d₀, d₁, d₂) tensor."""

    @staticmethod
    @abstractmethod
    def from_modes(tensor: Tensor) -> Tensor:
        """Inverse of :meth:`to_modes`."""

    @staticmethod
    @abstractmethod
    def ranks_at_scale(dims: Sequence[int], scale: float) -> tuple[int, ...]:
        """The official ranks of the tensor at rank scale ``scale`` (decomposed.py:36-37)."""


def carrier_spec(out: int, inp: int, k: int) -> DenseSpec:
    """A Conv1d-shaped spec (never run as a conv): its ``tensor_shape`` is (out, inp, k)."""
    return DenseSpec(out, inp, False, (k,), (1,), (0,), (1,))


def separable_families() -> tuple[str, ...]:
    """The registered families that serve the block (a ``separable`` carrier), sorted."""
    return tuple(name for name in available_families() if get_family(name).separable is not None)


def _carrier(family: str) -> type[SeparableCarrier]:
    check_choice("family", family, separable_families())
    return get_family(family).separable


class SeparableLayer(Factorized):
    """Dense depthwise k×k conv followed by a TT/Tucker 1×1 conv (the official Table-2 block).

    Args:
        spec: the dense k×k conv it replaces (``nn.Conv{1,2,3}d`` with a kernel axis > 1).
        family: the pointwise tensor's format, one of :func:`separable_families` (TT, Tucker).
        rank: explicit ranks of the (d₀, d₁, d₂) tensor in the family's terms: TT (r₀₁, r₁₂),
            Tucker (r₀, r₁, r₂).

    Shapes: (N, c_in, *spatial) → (N, c_out, *spatial') as the dense conv with weight
    :meth:`reconstruct`. Parameters: the depthwise kernel c_in·Π k (plain weight, plain weight
    decay as the official code: models/wide_resnet.py:33-51 leaves ``grouped`` out of the factors),
    the tensor's factors (``factor_parameters``: Frobenius decay or "crs" decay act on them), bias.
    Frobenius decay is ‖P‖²_F, the pointwise product (the official ``normsqW``, decomposed.py:126).
    Construction leaves the parts' default random init; :meth:`from_dense` applies :meth:`init`.
    """

    def __init__(self, spec: DenseSpec, family: str, rank: Sequence[int], *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.check_applies(spec)
        self.spec, self.family, self.carrier = spec, family, _carrier(family)
        self.dims = tensorize_shape(spec.out_channels, spec.in_channels)
        factory = {"device": device, "dtype": dtype}
        c_in = spec.in_channels
        self.depthwise = CONV_TYPES[spec.n_spatial - 1](
            c_in, c_in, spec.kernel_size, stride=spec.stride, padding=spec.padding, dilation=spec.dilation,
            groups=c_in, bias=False, padding_mode=spec.padding_mode, **factory)
        cls, carrier = get_family(family), self.carrier.spec(self.dims)
        self.pointwise: FactorizedLayer = cls(carrier, cls._clamp(carrier, tuple(rank)),
                                              implementation="reconstructed", **factory)
        if spec.has_bias:
            self.bias = nn.Parameter(torch.zeros(spec.out_channels, **factory))
        else:
            self.register_parameter("bias", None)

    # ------------------------------------------------------------------ ranks and budgets
    @staticmethod
    def check_applies(spec: DenseSpec) -> None:
        """``ValueError`` unless ``spec`` is a conv with a spatial kernel (a depthwise k×k part)."""
        if not spec.factor_axes:
            raise ValueError(f"the separable block replaces a conv with a kernel > 1, got a {spec.kind} with "
                             f"kernel {spec.kernel_size}; leave 1×1 convs and Linear layers dense")

    @staticmethod
    def applies_to(module: nn.Module) -> bool:
        """Whether :meth:`from_dense` accepts ``module``: a conv with a kernel axis > 1."""
        return isinstance(module, CONV_TYPES) and any(k > 1 for k in module.kernel_size)

    @classmethod
    def ranks_at_scale(cls, spec: DenseSpec, family: str, scale: float) -> tuple[int, ...]:
        """The official ranks at rank scale ``scale``, clamped to what the tensor can hold."""
        dims, carrier = tensorize_shape(spec.out_channels, spec.in_channels), _carrier(family)
        return get_family(family)._clamp(carrier.spec(dims), carrier.ranks_at_scale(dims, scale))

    @classmethod
    def total_params(cls, spec: DenseSpec, family: str, rank: Sequence[int]) -> int:
        """Depthwise c_in·Π k + the tensor's factors + bias."""
        carrier = _carrier(family).spec(tensorize_shape(spec.out_channels, spec.in_channels))
        bias = spec.out_channels if spec.has_bias else 0
        return spec.in_channels * math.prod(spec.kernel_size) + get_family(family).count_params(carrier, rank) + bias

    @classmethod
    def resolve_rank(cls, spec: DenseSpec, family: str, rank: float | Sequence[int]) -> tuple[int, ...]:
        """:class:`RankScale` s: the official ranks at s; float: a parameter ratio to the dense conv
        (weight and bias), the rank scale bisected; tuple: explicit ranks."""
        if isinstance(rank, RankScale):
            if not math.isfinite(rank) or rank <= 0:
                raise ValueError(f"rank scale must be a positive number, got {float(rank)!r}")
            return cls.ranks_at_scale(spec, family, float(rank))
        if isinstance(rank, float):
            get_family(family).check_ratio(rank)
            (ranks,) = allocate([lambda s: cls.ranks_at_scale(spec, family, s)],
                                lambda _, r: cls.total_params(spec, family, r), rank * spec.num_params)
            return ranks
        if isinstance(rank, Sequence) and not isinstance(rank, str) and all(
                isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rank):
            return tuple(rank)
        raise TypeError(f"rank of a separable {family} block must be a RankScale, a float parameter ratio or a "
                        f"tuple of positive ints, got {rank!r}")

    @classmethod
    def from_dense(cls, module: nn.Module, family: str, rank: float | Sequence[int],
                   init: str = "spectral") -> SeparableLayer:
        """The block replacing ``module``; its bias is kept. The kernel of ``module`` is not a
        depthwise∘pointwise product, so ``init`` draws fresh weights as the official code (:meth:`init`)."""
        check_choice("init", init, SEPARABLE_INITS)
        spec = DenseSpec.from_module(module)
        cls.check_applies(spec)
        weight = module.weight.detach()
        layer = cls(spec, family, cls.resolve_rank(spec, family, rank), device=weight.device, dtype=weight.dtype)
        layer.init(init)
        if module.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(module.bias)
        return layer

    @torch.no_grad()
    def init(self, kind: str) -> None:
        """The official init, both kinds a decomposition of a dense pointwise draw P₀.

        Depthwise D ~ N(0, 2/(Π k·c_in)) (models/wide_resnet.py:109-113: n = k_h·k_w·out_channels of
        the grouped conv). P₀ (c_out, c_in): ``"random"`` (the official "regular") PyTorch's 1×1
        default U(±1/√c_in) (decomposed.py:100-112, called from nn.Conv2d.__init__);
        ``"spectral"`` N(0, 2/c_out) (wide_resnet.py:114-119). T = tdecomp's SI of P₀'s reshape
        (TT-SVD or HOOI at the ranks, then balanced factor norms; the official tntorch
        decomposition leaves the norm in one factor).
        """
        check_choice("init", kind, SEPARABLE_INITS)
        c_out, c_in = self.spec.out_channels, self.spec.in_channels
        self.depthwise.weight.normal_(0.0, math.sqrt(2.0 / (math.prod(self.spec.kernel_size) * c_in)))
        p0 = torch.empty(c_out, c_in, device=self.depthwise.weight.device, dtype=self.depthwise.weight.dtype)
        if kind == "spectral":
            p0.normal_(0.0, math.sqrt(2.0 / c_out))
        else:
            p0.uniform_(-1.0 / math.sqrt(c_in), 1.0 / math.sqrt(c_in))
        self.pointwise.init_spectral(self.carrier.from_modes(p0.reshape(self.dims)))

    # ------------------------------------------------------------------ the interface
    @property
    def rank(self) -> tuple[int, ...]:
        return self.pointwise.rank

    def pointwise_weight(self) -> Tensor:
        """P (c_out, c_in): the tensor reshaped row-major (decomposed.py:95-98)."""
        tensor = self.carrier.to_modes(self.pointwise.reconstruct())
        return tensor.reshape(self.spec.out_channels, self.spec.in_channels)

    def reconstruct(self) -> Tensor:
        """The dense equivalent W[o, i, …] = P[o, i]·D[i, …], shape ``spec.weight_shape``."""
        pointwise = self.pointwise_weight()
        return pointwise.reshape(*pointwise.shape, *(1,) * self.spec.n_spatial) * self.depthwise.weight[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        ones = (1,) * self.spec.n_spatial
        weight = self.pointwise_weight().reshape(self.spec.out_channels, self.spec.in_channels, *ones)
        return getattr(F, f"conv{self.spec.n_spatial}d")(self.depthwise(x), weight, self.bias)

    def frobenius_sq(self) -> Tensor:
        """‖P‖²_F of the pointwise tensor, from its factor Grams."""
        return self.pointwise.frobenius_sq()

    def factor_parameters(self) -> list[nn.Parameter]:
        return self.pointwise.factor_parameters()

    def balancing_scales(self) -> list[tuple[nn.Parameter, Tensor]]:
        return self.pointwise.balancing_scales()

    @property
    def param_ratio(self) -> float:
        return self.num_params / self.spec.num_params

    def to_dense(self) -> nn.Module:
        """The dense conv computing exactly this block's function."""
        return self.spec.build(self.reconstruct().detach(), None if self.bias is None else self.bias.detach())

    def extra_repr(self) -> str:
        return (f"family={self.family}, {self.spec.in_channels}→{self.spec.out_channels}, "
                f"kernel={self.spec.kernel_size}, modes={self.dims}, rank={self.rank}, "
                f"params={self.num_params} ({self.param_ratio:.3f} of dense)")

