"""How a factorized layer runs: its factorized forward (the family's chain of small ops) or the
dense op on ``reconstruct()``, and which of the two a layer runs.

``implementation="auto"`` decides **once per layer**, on its first forward (or when asked, by
:meth:`Execution.choose`): on the CPU by the shape cost model of :mod:`.cost`, on
:data:`choice.MEASURED_DEVICES` (CUDA) by timing both (:mod:`.choice`). The decision is kept on
the layer as ``chosen_implementation`` — the one cache —, travels with its ``state_dict`` (extra
state, restored on load) and is reported by :func:`chosen_implementations` (a run's
``summary.json``). Later inputs of other shapes run the same path: no per-shape choice, so two
runs from one checkpoint take the same numerical path, and ``torch.compile`` sees a constant
(no graph break, no recompilation per input shape). The module also holds the conv helpers the
families' forwards use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import _EXTRA_STATE_KEY_SUFFIX

from .._validation import check_choice
from . import choice
from .cost import auto_choice, batch_and_grid, reconstructed_cost
from .spec import DenseSpec

IMPLEMENTATIONS = ("factorized", "reconstructed", "auto")
CHOSEN = IMPLEMENTATIONS[:2]  # what a layer runs; its extra state stores the index (-1: not decided yet)
UNDECIDED = -1


class Execution(nn.Module):
    """Mixin of :class:`~tdecomp.layers.base.FactorizedLayer`: ``forward``, the implementation it
    runs and the cost of running it; call :meth:`_init_execution` once ``spec`` is set.

    ``implementation`` is what was asked (``"factorized"``, ``"reconstructed"`` or ``"auto"``;
    assigning it overrides the layer's path), ``chosen_implementation`` what :meth:`forward` runs
    (``None`` for an ``"auto"`` layer that has not decided yet).
    """

    spec: DenseSpec

    def _init_execution(self, implementation: str) -> None:
        self.implementation = implementation
        self.register_load_state_dict_pre_hook(_undecided_if_absent)

    @property
    def implementation(self) -> str:
        """The requested implementation; setting it fixes the path (``"factorized"``/``"reconstructed"``)
        or, with ``"auto"``, lets the next forward decide again."""
        return self._implementation

    @implementation.setter
    def implementation(self, value: str) -> None:
        self._implementation = check_choice("implementation", value, IMPLEMENTATIONS)
        self.chosen_implementation: str | None = None if value == "auto" else value

    def macs(self, input_shape: Sequence[int], implementation: str | None = None) -> int:
        """Multiply-accumulates of one forward on an input of ``input_shape`` (:meth:`Cost.total_macs`).

        ``implementation`` defaults to the one :meth:`forward` runs (for an undecided ``"auto"``
        layer, the cost model's choice for this shape). The dense layer's count is
        N·P_out·numel(W) (P_out output positions per sample); the ratio of the two is the benchmarks' FLOP ratio.
        """
        impl = implementation or self.chosen_implementation or self.choose_implementation(input_shape)
        check_choice("implementation", impl, CHOSEN)
        batch, grid = batch_and_grid(self.spec, input_shape)
        cls, options = type(self), self.family_options
        if impl == "factorized":
            return cls._factorized_cost(self.spec, self.rank, grid, **options).total_macs(batch)
        return reconstructed_cost(cls, self.spec, self.rank, grid, options).total_macs(batch)

    def choose_implementation(self, input_shape: Sequence[int]) -> str:
        """The cost model's implementation for an input of ``input_shape`` (a pure function of shapes,
        :func:`~tdecomp.layers.cost.auto_choice`), or the fixed one; decides nothing (:meth:`choose` does)."""
        if self.implementation != "auto":
            return self.implementation
        batch, grid = batch_and_grid(self.spec, input_shape)
        return auto_choice(type(self), self.spec, self.rank, batch, grid, self.family_options)

    def choose(self, example: Tensor | Sequence[int]) -> str:
        """Decide (again) the implementation of an ``"auto"`` layer for inputs like ``example`` (a
        tensor, or a shape: then a random input on the layer's device and dtype) and keep it as
        ``chosen_implementation``; returns it. Measured (forward, and backward when autograd
        records) on :data:`choice.MEASURED_DEVICES` outside ``torch.compile``, the cost model
        (:meth:`choose_implementation`) elsewhere. A layer with a fixed ``implementation`` returns it."""
        if self.implementation != "auto":
            return self.implementation
        shape = tuple(example.shape) if isinstance(example, Tensor) else tuple(example)
        factor = next(self.parameters())
        if factor.device.type in choice.MEASURED_DEVICES and not torch.compiler.is_compiling():
            if not isinstance(example, Tensor):
                generator = torch.Generator(factor.device).manual_seed(0)  # leaves the global RNG alone
                example = torch.randn(shape, generator=generator, device=factor.device, dtype=factor.dtype)
            params = [p for p in self.parameters() if p.requires_grad]
            chosen = choice.measure(self._run, example, params)
        else:
            chosen = self.choose_implementation(shape)
        self.chosen_implementation = chosen
        return chosen

    def forward(self, x: Tensor) -> Tensor:
        implementation = self.chosen_implementation
        if implementation is None:  # the first forward of an "auto" layer
            implementation = self.choose(x)
        return self._run(x, implementation)

    def get_extra_state(self) -> Tensor:
        """The chosen implementation as a 0-d int8 tensor (its index in :data:`CHOSEN`, −1 undecided),
        so a ``state_dict`` stays all tensors (``torch.equal``, safetensors)."""
        chosen = self.chosen_implementation
        return torch.tensor(UNDECIDED if chosen is None else CHOSEN.index(chosen), dtype=torch.int8)

    def set_extra_state(self, state: Any) -> None:
        """Restore the chosen implementation of an ``"auto"`` layer (−1: decide again on the next
        forward); a layer with a fixed ``implementation`` keeps it."""
        if self.implementation == "auto":
            index = int(state)
            self.chosen_implementation = None if index == UNDECIDED else CHOSEN[index]

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


def chosen_implementations(model: nn.Module) -> dict[str, str | None]:
    """``{qualified name: chosen implementation}`` of every factorized layer in ``model`` (``None``:
    an ``"auto"`` layer that has run no forward yet), in module order."""
    return {name: m.chosen_implementation for name, m in model.named_modules() if isinstance(m, Execution)}


def _undecided_if_absent(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """State-dict pre-hook: a checkpoint written before layers saved their choice loads as
    "undecided" (an ``"auto"`` layer decides again on its next forward)."""
    state_dict.setdefault(prefix + _EXTRA_STATE_KEY_SUFFIX, torch.tensor(UNDECIDED, dtype=torch.int8))
