"""How a factorized layer runs: its factorized forward (the family's chain of small ops) or the
dense op on ``reconstruct()``, chosen per input (``implementation="auto"``: the shape cost model of
:mod:`.cost`, measured on CUDA by :mod:`.choice`), and the conv helpers the families' forwards use."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_choice
from . import choice
from .cost import auto_choice, batch_and_grid, reconstructed_cost
from .spec import DenseSpec

IMPLEMENTATIONS = ("factorized", "reconstructed", "auto")


class Execution(nn.Module):
    """Mixin of :class:`~tdecomp.layers.base.FactorizedLayer`: ``forward`` and the cost of running it."""

    spec: DenseSpec
    implementation: str

    def macs(self, input_shape: Sequence[int], implementation: str | None = None) -> int:
        """Multiply-accumulates of one forward on an input of ``input_shape`` (:meth:`Cost.total_macs`).

        ``implementation`` defaults to the one :meth:`forward` runs. The dense layer's count is
        N·P_out·numel(W) (P_out output positions per sample); the ratio of the two is the benchmarks' FLOP ratio.
        """
        impl = self.choose_implementation(input_shape) if implementation is None else implementation
        check_choice("implementation", impl, IMPLEMENTATIONS[:2])
        batch, grid = batch_and_grid(self.spec, input_shape)
        cls, options = type(self), self.family_options
        if impl == "factorized":
            return cls._factorized_cost(self.spec, self.rank, grid, **options).total_macs(batch)
        return reconstructed_cost(cls, self.spec, self.rank, grid, options).total_macs(batch)

    def choose_implementation(self, input_shape: Sequence[int]) -> str:
        """The implementation :meth:`forward` runs on an input of ``input_shape``: the fixed one, or
        for ``"auto"`` the one with the lower forward cost (:func:`~tdecomp.layers.cost.auto_choice`).
        On CUDA :meth:`forward` measures instead (:mod:`tdecomp.layers.choice`)."""
        if self.implementation != "auto":
            return self.implementation
        batch, grid = batch_and_grid(self.spec, input_shape)
        return auto_choice(type(self), self.spec, self.rank, batch, grid, self.family_options)

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, self._implementation_for(x))

    def _implementation_for(self, x: Tensor) -> str:
        """The implementation for input ``x``: fixed, or for ``"auto"`` the choice cached on this
        layer per (shape, dtype, device) — measured on :data:`choice.MEASURED_DEVICES` in eager
        mode, else :meth:`choose_implementation`. Under ``torch.compile`` only the cache and the
        cost model run (traced to constants), never a timing."""
        if self.implementation != "auto":
            return self.implementation
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        key = (tuple(x.shape), dtype, x.device)
        cached = self._choices.get(key)
        if cached is not None:
            return cached
        if x.device.type in choice.MEASURED_DEVICES and not torch.compiler.is_compiling():
            geometry = (type(self), self.spec, self.rank, tuple(self.family_options.items()), *key)
            params = [p for p in self.parameters() if p.requires_grad]
            chosen = choice.measure(geometry, self._run, x, params)
        else:
            chosen = self.choose_implementation(x.shape)
        self._choices[key] = chosen
        return chosen

    def _run(self, x: Tensor, implementation: str) -> Tensor:
        if implementation == "reconstructed":
            with self._weight_precision(x):
                weight = self.reconstruct()
            return self.spec.functional(x, weight, self.bias)
        pad: tuple[int, ...] = ()
        if self.spec.is_conv:
            x, pad = self.spec.pad_input(x)
        out = self._forward_factorized(x, pad)
        return out if self.bias is None else out + self.spec.bias_view(self.bias)

    # ------------------------------------------------------------------ helpers for families' forwards
    @staticmethod
    def _weight_precision(x: Tensor) -> torch.autocast:
        """Build weights from factors in the factors' precision even under autocast: a product of
        3–4 factors rounded to bf16 at every stage loses ~3 significant bits; the weight is small
        and the op that uses it is cast to the autocast dtype anyway."""
        return torch.autocast(x.device.type, enabled=False)

    def _mix(self, x: Tensor, weight: Tensor) -> Tensor:
        """Channel mixing by ``weight`` (out, in): a matmul on the last dim, or a 1-tap conv."""
        if self.spec.is_conv:
            return self._conv(x, weight, (), (0,) * self.spec.n_spatial)
        return F.linear(x, weight)

    def _conv(
        self, x: Tensor, weight: Tensor, modes: Sequence[int], pad: Sequence[int], groups: int = 1
    ) -> Tensor:
        """Convolution by ``weight`` (o, i/groups, *kernel over ``modes``) over the factor ``modes``.

        ``modes`` index :attr:`DenseSpec.factor_axes` (the kernel axes of size > 1); the dense
        layer's stride/padding/dilation apply there, the other spatial axes see a 1-tap kernel.
        """
        spec = self.spec
        axes = [spec.factor_axes[m] for m in modes]
        kernel = [1] * spec.n_spatial
        for a, k in zip(axes, weight.shape[2:]):
            kernel[a] = k
        return spec.axis_conv(x, weight.reshape(*weight.shape[:2], *kernel), axes, pad, groups)
