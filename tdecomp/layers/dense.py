"""Dense-compatible layers: what model code reads from the ``nn.Linear``/``nn.Conv{1,2,3}d`` a
factorized layer replaces, read from its :class:`~tdecomp.layers.spec.DenseSpec` (HANDBOOK A).

- Linear-shaped layers have ``in_features``, ``out_features``; conv-shaped ones ``in_channels``,
  ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``groups``,
  ``padding_mode`` (tuples as the dense module holds them); one replacing transformers' ``Conv1D``
  has its ``nf``, ``nx``; the other kinds' names raise ``AttributeError``, as on the dense modules.
- ``weight`` is a read-only placeholder with the dense weight's shape (``Conv1D``'s (nx, nf)), dtype and device: an
  expanded (zero-stride) view of one NaN held as a non-persistent buffer, so it costs no memory
  and no reconstruction, moves with ``.to()``/``.half()``, and any use of its values gives NaN.
  T5-style ``weight.dtype`` checks and ``weight.shape``/``weight.device`` reads work;
  ``reconstruct()`` is the way to get W.
- Checkpoints written when CP/Tucker/TT layers kept their tltorch tensor under ``weight`` load
  through a state-dict pre-hook that renames ``….weight.*`` keys to ``….decomposition.*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .spec import DenseSpec

LINEAR_ATTRIBUTES = frozenset({"in_features", "out_features"})
TRANSPOSED_LINEAR_ATTRIBUTES = frozenset({"nf", "nx"})  # transformers' Conv1D
CONV_ATTRIBUTES = frozenset(
    {"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"}
)
# where CP/Tucker/TT layers keep their tltorch tensor; older checkpoints stored it as ``weight``
DECOMPOSITION, OLD_DECOMPOSITION = "decomposition", "weight"


def _from_spec(name: str, read: Callable[[DenseSpec], Any]) -> property:
    """A read-only property ``name`` = ``read(self.spec)`` on the layers whose dense module has it."""

    def get(self: DenseCompatible) -> Any:
        if name not in self._dense_attributes():
            # the property's AttributeError sends Python to nn.Module.__getattr__, which names the class
            raise AttributeError(name)
        return read(self.spec)

    return property(get, doc=f"The dense module's ``{name}`` (from ``spec``).")


class DenseCompatible(nn.Module):
    """Mixin exposing the dense module's public attributes from ``self.spec``; call
    :meth:`_init_dense_compatible` once ``spec`` is set."""

    spec: DenseSpec

    def _init_dense_compatible(self, device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        self.register_buffer("_weight_placeholder", torch.full((), float("nan"), device=device, dtype=dtype),
                             persistent=False)
        self.register_load_state_dict_pre_hook(_rename_old_decomposition_keys)

    def _dense_attributes(self) -> frozenset[str]:
        """The names this layer's dense module has (a conv's, a Linear's or a ``Conv1D``'s)."""
        if self.spec.transposed_type is not None:
            return TRANSPOSED_LINEAR_ATTRIBUTES
        return CONV_ATTRIBUTES if self.spec.is_conv else LINEAR_ATTRIBUTES

    @property
    def weight(self) -> Tensor:
        """Placeholder of the dense module's weight (shape ``spec.module_weight_shape``, the layer's dtype
        and device): every entry NaN, no memory; :meth:`reconstruct` gives W (as ``spec.weight_shape``)."""
        return self._weight_placeholder.expand(self.spec.module_weight_shape)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "weight":
            raise AttributeError(f"{type(self).__name__}.weight is a read-only placeholder of the dense weight's "
                                 "shape, dtype and device; the factors hold W (reconstruct() builds it)")
        super().__setattr__(name, value)

    in_features = _from_spec("in_features", lambda spec: spec.in_channels)
    out_features = _from_spec("out_features", lambda spec: spec.out_channels)
    in_channels = _from_spec("in_channels", lambda spec: spec.in_channels)
    out_channels = _from_spec("out_channels", lambda spec: spec.out_channels)
    kernel_size = _from_spec("kernel_size", lambda spec: spec.kernel_size)
    stride = _from_spec("stride", lambda spec: spec.stride)
    padding = _from_spec("padding", lambda spec: spec.padding)
    dilation = _from_spec("dilation", lambda spec: spec.dilation)
    groups = _from_spec("groups", lambda spec: 1)  # DenseSpec refuses grouped convs
    padding_mode = _from_spec("padding_mode", lambda spec: spec.padding_mode)
    nf = _from_spec("nf", lambda spec: spec.out_channels)
    nx = _from_spec("nx", lambda spec: spec.in_channels)


def _rename_old_decomposition_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """State-dict pre-hook: ``{prefix}weight.*`` → ``{prefix}decomposition.*`` for a layer holding a
    ``decomposition`` submodule (checkpoints of CP/Tucker/TT layers written before the rename)."""
    if DECOMPOSITION not in module._modules:
        return
    old = f"{prefix}{OLD_DECOMPOSITION}."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[f"{prefix}{DECOMPOSITION}.{key[len(old):]}"] = state_dict.pop(key)
