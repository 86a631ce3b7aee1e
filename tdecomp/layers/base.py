"""The one interface every factorized layer implements: the family contract.

A family is one subclass of :class:`FactorizedLayer` in one file, registered with
:func:`~tdecomp.layers.registry.register_family`. It declares its tensor format and SI
(``_build``, ``factors``, ``reconstruct``, ``init_spectral``), its forward chain
(``_forward_factorized``), Frobenius/inner/balancing, how ranks map to parameters
(``_ranks_at_scale``, ``count_params``, ``max_ranks``), and optionally its ``options`` schema,
cost model, ``energy_curves``, ``factor_inits``, ``separable`` carrier, attention heads
(:func:`~tdecomp.layers.attention.register_heads`), ``tltorch`` counterpart and, for data-aware SI,
its ``input_factor`` and ``input_axes`` (:mod:`.whitening`). Everything else
lives once in the mixins and helpers by job: :mod:`.dense` (dense-module attributes),
:mod:`.execution` (forward, implementation choice), :mod:`.diagnostics` (defaults the dynamics
tracker reads), :mod:`.ranks`, :mod:`.cost`, :mod:`.options`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from .._validation import check_choice
from ..init import FACTOR_INITS, FACTORIZED_INIT_METHODS, balanced_std, equalizing_scales
from . import ranks
from .cost import Cost, Grid
from .dense import DenseCompatible
from .diagnostics import Diagnostics
from .energy import EnergyCurve
from .execution import Execution
from .factorized import Factorized
from .options import FamilyOption, check_options, with_defaults
from .ranks import Rank
from .registry import FAMILIES
from .spec import DenseSpec
from .spectral import spectral_init
from .whitening import LayerStats, init_whitened

if TYPE_CHECKING:
    from .._tltorch import TltorchFormat
    from .separable import SeparableCarrier


class FactorizedLayer(Factorized, DenseCompatible, Diagnostics, Execution):
    """A dense ``nn.Linear``/``nn.Conv{1,2,3}d`` whose weight is a low-rank, CP, Tucker or TT product.

    Args:
        spec: geometry of the dense layer it replaces (:class:`DenseSpec`).
        rank: explicit ranks in the family's own terms (see :meth:`resolve_rank`).
        **options: the family's :attr:`options` (held, defaults filled in, as ``family_options``).
        implementation: ``"factorized"`` convolves/multiplies by the factors in sequence;
            ``"reconstructed"`` builds W and runs the dense op (cheaper for tiny batches or
            ranks near full); ``"auto"`` (default) decides once, on the first forward (the cost
            model on the CPU, timing on CUDA; :mod:`tdecomp.layers.execution`), and keeps it as
            ``chosen_implementation`` (saved with the ``state_dict``; :meth:`choose` decides again).

    Shapes: a Linear layer maps ``(*, c_in) → (*, c_out)``; an n-d conv ``(N, c_in, *spatial) →
    (N, c_out, *spatial')`` exactly as the dense layer with weight :meth:`reconstruct` would.
    The families decompose :attr:`DenseSpec.tensor_shape` (size-1 kernel axes dropped, so they
    get no factor); :meth:`reconstruct` returns the dense module's ``spec.weight_shape``.
    Construction initializes the factors at once (random, dense default scale) so a layer never
    holds uninitialized memory; :meth:`from_dense` then applies the requested init.

    Drop-in: the layer has the dense module's attributes (``in_features``/``out_features``, or
    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``padding_mode``; ``bias``) and a read-only NaN placeholder ``weight`` of the dense
    weight's shape, dtype and device (:mod:`tdecomp.layers.dense`).
    """

    family: ClassVar[str]
    # the family's keyword options (e.g. Tucker's ``fixed_spatial``): taken by the constructor,
    # :meth:`from_dense` and every rank/cost classmethod; anything else is rejected by :meth:`check_options`
    options: ClassVar[tuple[FamilyOption, ...]] = ()
    # whether a parameter ratio above 1 has a meaning (low rank's overcomplete U M Vᵀ)
    has_overcomplete_form: ClassVar[bool] = False
    # how the family holds the official Table-2 block's pointwise tensor (None: it does not serve it)
    separable: ClassVar[type[SeparableCarrier] | None] = None
    # the per-factor draws of :data:`~tdecomp.init.FACTOR_INITS` the family defines (:meth:`init_factors`)
    factor_inits: ClassVar[tuple[str, ...]] = ()
    # the family's tensorly-torch counterpart, for the benchmarks (None: tltorch has none)
    tltorch: ClassVar[TltorchFormat | None] = None
    # what SI padded (:mod:`.spectral`: a zero or rank-deficient weight), set by :meth:`from_dense`
    si_padding: str | None = None

    def __init__(
        self,
        spec: DenseSpec,
        rank: Sequence[int],
        *,
        implementation: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.spec = spec
        self._init_dense_compatible(device, dtype)
        self.family_options = self.resolve_options(options)  # every option, defaults filled in
        self._init_execution(implementation)
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
    def count_params(cls, spec: DenseSpec, rank: Sequence[int], **options: Any) -> int:
        """Weight parameters (bias excluded) of a layer with these ranks (and family ``options``, e.g.
        low rank's ``overcomplete``)."""

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
    def _forward_factorized(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        """Apply the weight as a sequence of factor ops (no bias); ``x`` and ``pad`` from
        :meth:`DenseSpec.pad_input` (``pad`` is ``()`` for Linear); see :meth:`_conv`."""

    @abstractmethod
    def init_spectral(self, weight: Tensor) -> None:
        """Set the factors to the family's decomposition of ``weight`` (shape ``spec.weight_shape``)."""

    def _pads_missing_directions(self) -> bool:
        """Whether SI pads the directions a zero or rank-deficient weight lacks (:mod:`.spectral`);
        a family whose SI leaves zero factors on purpose says no."""
        return True

    def _balanced_norms(self) -> Tensor:
        """The norms :meth:`balancing_scales` equalizes, (K, …) for the K :meth:`factors`: by default
        their Frobenius norms (K,); a family with finer exact rescalings (CP's per-component) overrides it."""
        return torch.stack([f.norm() for f in self.factors()])

    def balancing_scales(self) -> list[tuple[nn.Parameter, Tensor]]:
        """Equal factor norms at a fixed W (:func:`tdecomp.init.equalizing_scales` of
        :meth:`_balanced_norms`), for layers of more than two factors.

        Two factors (U Vᵀ, the paper's setting, and CP/TT of a Linear layer) are left to plain FD:
        measured stable (``docs/dynamics.md``), and FD there stays exactly the paper's.
        """
        factors = self.factors()
        if len(factors) <= 2:
            return []
        # ≥ float32: the scales' product must be 1 to keep W, which half-precision logs would miss
        norms = self._balanced_norms()
        return list(zip(factors, equalizing_scales(norms.to(torch.promote_types(norms.dtype, torch.float32)))))

    @abstractmethod
    def _random_init_terms(self) -> int:
        """Number of factor products summed in each reconstructed entry (for :func:`balanced_std`)."""

    # ------------------------------------------------------------------ cost model (optional)
    # A family without these still works: ``"auto"`` then always runs ``"factorized"``.
    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: Grid, **options: Any) -> Cost:
        """:class:`Cost` of :meth:`_forward_factorized` on one sample of spatial ``grid``
        (:func:`~tdecomp.layers.cost.conv_grid`) for a layer with these ranks and family ``options``."""
        raise NotImplementedError(f"family {cls.family!r} has no cost model")

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...], **options: Any) -> int:
        """MACs of one :meth:`reconstruct` call of a layer with these ranks and family ``options``."""
        raise NotImplementedError(f"family {cls.family!r} has no cost model")

    # ------------------------------------------------------------------ allocation (optional)
    @classmethod
    def energy_curves(cls, spec: DenseSpec, weight: Tensor, **options: Any) -> list[EnergyCurve | None]:
        """Per rank entry, the :class:`~tdecomp.layers.energy.EnergyCurve` of what that entry
        truncates in a layer ``spec`` holding the dense ``weight`` (``spec.weight_shape``) with these
        options; ``None`` for an entry the family keeps at full size. Read by the allocation rules
        that look at the trained weight (``energy``, ``stable-rank``)."""
        raise ValueError(f"rank allocation by the trained weight needs family {cls.family!r} to define "
                         "energy_curves; use allocation='uniform' for it")

    # ------------------------------------------------------------------ data-aware SI (optional)
    @classmethod
    def input_axes(cls, spec: DenseSpec) -> tuple[int, ...]:
        """The axes of ``spec.weight_shape`` that :meth:`input_factor` indexes, in its order (1: c_in,
        2 + a: kernel axis a): the input space whitened SI whitens (:mod:`.whitening`). Default: c_in."""
        return (1,)

    def input_factor(self) -> tuple[Tensor, int]:
        """The one factor indexed by the input space of :meth:`input_axes`, and its dimension that does.
        Whitened SI maps it back by L⁻ᵀ; a family without it has no whitened SI."""
        raise ValueError(f"init='whitened' needs family {self.family!r} to declare its input_factor; "
                         "use init='spectral' for it")

    @torch.no_grad()
    def balance_factors(self) -> None:
        """Rescale the factors, W unchanged, to the balance the family's SI leaves them in: equal
        :meth:`_balanced_norms` (equal factor norms; CP: per component). Whitened SI ends with it."""
        for factor, scale in zip(self.factors(), equalizing_scales(self._balanced_norms())):
            factor.mul_(scale)

    # ------------------------------------------------------------------ construction
    resolve_rank = classmethod(ranks.resolve_rank)
    _clamp = classmethod(ranks.clamp)
    check_ratio = classmethod(ranks.check_ratio)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """``TypeError`` naming any option this family does not declare (a typo would be ignored),
        ``ValueError`` for a value of the wrong type or outside the option's choices."""
        check_options(cls.family, cls.options, options, extra=("implementation",))

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option of the family: ``options`` (checked) where given, the defaults elsewhere."""
        check_options(cls.family, cls.options, options)
        return with_defaults(cls.options, options)

    @classmethod
    def from_dense(
        cls,
        module: nn.Module,
        rank: Rank,
        init: str = "spectral",
        implementation: str = "auto",
        calibration: LayerStats | None = None,
        **options: Any,
    ) -> FactorizedLayer:
        """Factorize ``module`` (``nn.Linear``, ``nn.Conv{1,2,3}d`` or transformers' ``Conv1D``); see
        :func:`tdecomp.factorize`. SI runs as :func:`~tdecomp.layers.spectral.spectral_init` says (≥ float32,
        padded where the weight lacks directions, refused on ``meta``); a random init on ``meta`` only draws.
        ``calibration``: the module's input statistics, which ``init="whitened"`` needs."""
        check_choice("init", init, FACTORIZED_INIT_METHODS)
        if init == "whitened" and calibration is None:
            raise ValueError("init='whitened' needs the layer's input statistics: calibration=stats[name] "
                             "from tdecomp.calibrate(model, batches)")
        if init in FACTOR_INITS:
            cls._check_factor_init(init)
        cls.check_options(options)
        options = cls.resolve_options(options)
        spec = DenseSpec.from_module(module)
        weight = spec.dense_weight(module).detach()
        layer = cls(
            spec,
            cls.resolve_rank(spec, rank, **options),
            implementation=implementation,
            device=weight.device,
            dtype=weight.dtype,
            **options,
        )
        if init == "spectral":
            spectral_init(layer, weight)
        elif init == "whitened":
            init_whitened(layer, weight, calibration)
        elif init in FACTOR_INITS:
            layer.init_factors(init)
        else:
            layer.init_random(spec.default_std if weight.is_meta else float(weight.std()))
        if module.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(module.bias)
        return layer

    def init_factors(self, kind: str) -> None:
        """One of the per-factor draws :data:`~tdecomp.init.FACTOR_INITS` that the family defines
        (:attr:`factor_inits`); each family documents its draws."""
        self._check_factor_init(kind)
        raise NotImplementedError(f"family {self.family!r} lists {kind!r} in factor_inits but defines no init_factors")

    @classmethod
    def _check_factor_init(cls, kind: str) -> None:
        """``ValueError`` naming the families that define ``kind`` unless this family does."""
        if kind not in cls.factor_inits:
            defining = [n for n in FAMILIES.names() if kind in FAMILIES.get(n).factor_inits]
            raise ValueError(f"init={kind!r} is not defined for family {cls.family!r} (it is for: "
                             f"{', '.join(defining)}); use init='random' or 'spectral'")

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

    def to_dense(self) -> nn.Module:
        """An ``nn.Linear``/``nn.Conv{1,2,3}d`` computing exactly this layer's function."""
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
            if any(d != 1 for d in s.dilation):
                geometry += f", dilation={s.dilation}"
        return (
            f"family={self.family}, {s.kind}({geometry}), rank={self.rank}, "
            f"params={self.num_params} ({self.param_ratio:.3f} of dense)"
        )
