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
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._budget import allocate
from .._registry import Registry
from .._validation import check_choice
from ..init import INIT_METHODS, balanced_std
from .spec import Axis, DenseSpec

Rank = int | float | Sequence[int]
IMPLEMENTATIONS = ("factorized", "reconstructed")

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
            ``"reconstructed"`` builds W and runs the dense op (cheaper for tiny batches).

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
        implementation: str = "factorized",
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

    # ------------------------------------------------------------------ construction
    @classmethod
    def resolve_rank(cls, spec: DenseSpec, rank: Rank, **options: Any) -> tuple[int, ...]:
        """Turn a user ``rank`` into explicit ranks.

        - ``float``: target ratio of the factorized weight's parameters to the dense weight's
          (as in tensorly-torch); the family's rank scale is bisected to the closest count.
        - ``int``: the family's single rank (see each family).
        - tuple of ints: one entry per :meth:`rank_names`.
        Ranks above :meth:`max_ranks` carry no extra expressiveness and are clamped with a warning.
        """
        if isinstance(rank, bool):
            raise TypeError(f"rank must be a float, an int or a tuple of ints, got {rank!r}")
        if isinstance(rank, float):
            if not math.isfinite(rank) or rank <= 0:
                raise ValueError(f"rank must be a positive parameter ratio, got {rank!r}")
            (ranks,) = allocate(
                [lambda s: cls._ranks_at_scale(spec, s, **options)],
                lambda _, r: cls.count_params(spec, r),
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
        implementation: str = "factorized",
        **options: Any,
    ) -> FactorizedLayer:
        """Factorize ``module`` (``nn.Linear`` or ``nn.Conv2d``); see :func:`tdecomp.factorize`."""
        check_choice("init", init, INIT_METHODS)
        spec = DenseSpec.from_module(module)
        weight = module.weight.detach()
        layer = cls(
            spec,
            cls.resolve_rank(spec, rank, **options),
            implementation=implementation,
            device=weight.device,
            dtype=weight.dtype,
        )
        if init == "spectral":
            layer.init_spectral(weight)
        else:
            layer.init_random(float(weight.std()))
        if module.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(module.bias)
        return layer

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

    # ------------------------------------------------------------------ the interface
    def forward(self, x: Tensor) -> Tensor:
        if self.implementation == "reconstructed":
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
