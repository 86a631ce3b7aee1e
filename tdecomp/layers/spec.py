"""What a factorized layer replaces: the geometry of a dense ``nn.Linear`` or ``nn.Conv2d``.

A :class:`DenseSpec` is the single place that knows how the dense layer applies its weight
(stride, padding incl. ``'same'`` and non-zero padding modes, dilation). Factorized layers use it
to split a convolution into per-axis convolutions that are exactly equivalent to the dense one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Axis = Literal["h", "w", "hw"]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class DenseSpec:
    """Shape and geometry of a dense ``nn.Linear`` (``kind='linear'``) or ``nn.Conv2d``.

    For a Linear layer the weight is ``(out_channels, in_channels)``; for a conv it is
    ``(out_channels, in_channels, k_h, k_w)``. ``padding`` keeps the constructor's argument
    (an int pair or ``'same'``/``'valid'``) so :meth:`build` recreates an identical module.
    """

    kind: Literal["linear", "conv2d"]
    out_channels: int
    in_channels: int
    has_bias: bool
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    padding_mode: str = "zeros"

    @classmethod
    def from_module(cls, module: nn.Module) -> DenseSpec:
        """Describe ``module``; raises ``TypeError``/``NotImplementedError`` for what we cannot factorize."""
        if isinstance(module, nn.Linear):
            return cls("linear", module.out_features, module.in_features, module.bias is not None)
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise NotImplementedError(
                    f"groups={module.groups} is not supported: factorized convolutions need groups=1"
                )
            padding = module.padding if isinstance(module.padding, str) else _pair(module.padding)
            return cls(
                "conv2d",
                module.out_channels,
                module.in_channels,
                module.bias is not None,
                _pair(module.kernel_size),
                _pair(module.stride),
                padding,
                _pair(module.dilation),
                module.padding_mode,
            )
        raise TypeError(
            f"module must be nn.Linear or nn.Conv2d, got {type(module).__name__}"
        )

    # ----------------------------------------------------------------------------- shapes
    @property
    def is_conv(self) -> bool:
        return self.kind == "conv2d"

    @property
    def spatial(self) -> tuple[int, ...]:
        """Spatial kernel modes: ``(k_h, k_w)`` for a conv, ``()`` for a Linear layer."""
        return self.kernel_size if self.is_conv else ()

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """``(c_out, c_in, *spatial)``: the order-N tensor the tensor families decompose."""
        return (self.out_channels, self.in_channels, *self.spatial)

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def num_params(self) -> int:
        """Parameters of the dense layer: weight plus bias."""
        return self.weight_numel + (self.out_channels if self.has_bias else 0)

    @property
    def fan_in(self) -> int:
        return self.in_channels * math.prod(self.spatial)

    @property
    def default_std(self) -> float:
        """Std of PyTorch's default init, ``kaiming_uniform_(a=√5)``: U(±1/√fan_in)."""
        return 1.0 / math.sqrt(3.0 * self.fan_in)

    # ----------------------------------------------------------------------------- padding
    @property
    def pads(self) -> tuple[int, int, int, int]:
        """Explicit zero-based padding ``(top, bottom, left, right)`` this conv applies."""
        if self.padding == "valid" or not self.is_conv:
            return (0, 0, 0, 0)
        if self.padding == "same":
            out = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]  # PyTorch puts the odd extra pixel last
            return tuple(out)  # type: ignore[return-value]
        ph, pw = self.padding
        return (ph, ph, pw, pw)

    def pad_input(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Apply what the per-axis convs cannot: asymmetric or non-zero padding.

        Returns ``(x, (pad_h, pad_w))`` where the pair is left for the convolutions themselves
        (cheapest) when the padding is symmetric zero padding, and ``(0, 0)`` otherwise.
        """
        top, bottom, left, right = self.pads
        if self.padding_mode == "zeros" and top == bottom and left == right:
            return x, (top, left)
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, (left, right, top, bottom), mode=mode), (0, 0)

    # ----------------------------------------------------------------------------- apply
    def axis_conv(
        self, x: Tensor, weight: Tensor, axis: Axis, pad: tuple[int, int], groups: int = 1
    ) -> Tensor:
        """Convolve ``x`` (N, C, H, W) with ``weight`` using this conv's geometry on ``axis`` only.

        ``axis='h'`` applies stride/padding/dilation of the height axis (weight ``(o, i/g, k_h, 1)``),
        ``'w'`` those of the width axis (weight ``(o, i/g, 1, k_w)``), ``'hw'`` both.
        """
        on_h, on_w = "h" in axis, "w" in axis

        def on_axis(pair: tuple[int, int], off: int) -> tuple[int, int]:
            return (pair[0] if on_h else off, pair[1] if on_w else off)

        return F.conv2d(
            x,
            weight,
            stride=on_axis(self.stride, 1),
            padding=on_axis(pad, 0),
            dilation=on_axis(self.dilation, 1),
            groups=groups,
        )

    def functional(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The dense layer's forward with an explicit ``weight`` of shape :attr:`weight_shape`."""
        if not self.is_conv:
            return F.linear(x, weight, bias)
        x, pad = self.pad_input(x)
        out = self.axis_conv(x, weight, "hw", pad)
        return out if bias is None else out + bias.view(1, -1, 1, 1)

    def build(self, weight: Tensor, bias: Tensor | None) -> nn.Module:
        """A dense ``nn.Linear``/``nn.Conv2d`` with this geometry holding ``weight`` and ``bias``."""
        factory = dict(device=weight.device, dtype=weight.dtype)
        if self.is_conv:
            module: nn.Module = nn.Conv2d(
                self.in_channels,
                self.out_channels,
                self.kernel_size,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                bias=self.has_bias,
                padding_mode=self.padding_mode,
                **factory,
            )
        else:
            module = nn.Linear(self.in_channels, self.out_channels, bias=self.has_bias, **factory)
        with torch.no_grad():
            module.weight.copy_(weight)
            if bias is not None:
                module.bias.copy_(bias)
        return module
