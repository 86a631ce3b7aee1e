"""Dense-compatible layers: what model code reads from the ``nn.Linear``/``nn.Conv{1,2,3}d`` a
factorized layer replaces, read from its :class:`~tdecomp.layers.spec.DenseSpec` (HANDBOOK A).

- Linear-shaped layers have ``in_features``, ``out_features``; conv-shaped ones ``in_channels``,
  ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``groups``,
  ``padding_mode`` (tuples as the dense module holds them); the other kind's names raise
  ``AttributeError``, as on the dense modules.
- ``weight`` is a read-only placeholder with the dense weight's shape, dtype and device: an
  expanded (zero-stride) view of one NaN held as a non-persistent buffer, so it costs no memory
  and no reconstruction, moves with ``.to()``/``.half()``, and any use of its values gives NaN.
  T5-style ``weight.dtype`` checks and ``weight.shape``/``weight.device`` reads work;
  ``reconstruct()`` is the way to get W.
- Checkpoints written when CP/Tucker/TT layers kept their tltorch tensor under ``weight`` load
  through a state-dict pre-hook that renames ``….weight.*`` keys to ``….decomposition.*``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .spec import DenseSpec

LINEAR_ATTRIBUTES = frozenset({"in_features", "out_features"})
CONV_ATTRIBUTES = frozenset(
    {"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"}
)
# where CP/Tucker/TT layers keep their tltorch tensor; older checkpoints stored it as ``weight``
DECOMPOSITION, OLD_DECOMPOSITION = "decomposition", "weight"


class DenseCompatible(nn.Module):
    """Mixin exposing the dense module's public attributes from ``self.spec``; call
    :meth:`_init_dense_compatible` once ``spec`` is set."""

    spec: DenseSpec

    def _init_dense_compatible(self, device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        self.register_buffer("_weight_placeholder", torch.full((), float("nan"), device=device, dtype=dtype),
                             persistent=False)
        self.register_load_state_dict_pre_hook(_rename_old_decomposition_keys)

    def _dense_attributes(self) -> frozenset[str]:
        """The names this layer's dense module has (a conv's or a Linear's)."""
        return CONV_ATTRIBUTES if self.spec.is_conv else LINEAR_ATTRIBUTES

    def _dense(self, name: str, value: Any) -> Any:
        if name not in self._dense_attributes():
            # the property's AttributeError sends Python to nn.Module.__getattr__, which names the class
            raise AttributeError(name)
        return value

    @property
    def weight(self) -> Tensor:
        """Placeholder of the dense weight (shape ``spec.weight_shape``, the layer's dtype and device):
        every entry NaN, no memory; :meth:`reconstruct` gives W."""
        return self._weight_placeholder.expand(self.spec.weight_shape)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "weight":
            raise AttributeError(f"{type(self).__name__}.weight is a read-only placeholder of the dense weight's "
                                 "shape, dtype and device; the factors hold W (reconstruct() builds it)")
        super().__setattr__(name, value)

    @property
    def in_features(self) -> int:
        return self._dense("in_features", self.spec.in_channels)

    @property
    def out_features(self) -> int:
        return self._dense("out_features", self.spec.out_channels)

    @property
    def in_channels(self) -> int:
        return self._dense("in_channels", self.spec.in_channels)

    @property
    def out_channels(self) -> int:
        return self._dense("out_channels", self.spec.out_channels)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return self._dense("kernel_size", self.spec.kernel_size)

    @property
    def stride(self) -> tuple[int, ...]:
        return self._dense("stride", self.spec.stride)

    @property
    def padding(self) -> tuple[int, ...] | str:
        return self._dense("padding", self.spec.padding)

    @property
    def dilation(self) -> tuple[int, ...]:
        return self._dense("dilation", self.spec.dilation)

    @property
    def groups(self) -> int:
        return self._dense("groups", 1)  # DenseSpec refuses grouped convs

    @property
    def padding_mode(self) -> str:
        return self._dense("padding_mode", self.spec.padding_mode)


def _rename_old_decomposition_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """State-dict pre-hook: ``{prefix}weight.*`` → ``{prefix}decomposition.*`` for a layer holding a
    ``decomposition`` submodule (checkpoints of CP/Tucker/TT layers written before the rename)."""
    if DECOMPOSITION not in module._modules:
        return
    old = f"{prefix}{OLD_DECOMPOSITION}."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[f"{prefix}{DECOMPOSITION}.{key[len(old):]}"] = state_dict.pop(key)
