"""What a factorized layer replaces: the geometry of a dense ``nn.Linear`` or ``nn.Conv{1,2,3}d``.

A :class:`DenseSpec` is the single place that knows how the dense layer applies its weight
(stride, padding incl. ``'same'`` and non-zero padding modes, dilation) over its n spatial axes
(Linear: 0, Conv1d: 1, Conv2d: 2, Conv3d: 3). Factorized layers use it to split a convolution
into per-axis convolutions that are exactly equivalent to the dense one.

A kernel axis of size 1 (a 1×1 conv, a (1, 5) kernel) is not a factor mode: the families
decompose :attr:`DenseSpec.tensor_shape` = (c_out, c_in, *sizes of the kernel axes > 1), so a
Conv2d (1, 5) is factorized exactly like a Conv1d(k=5) and a 1×1 conv like a Linear layer. The
size-1 axes' stride and padding are applied to the input up front (:meth:`DenseSpec.pad_input`).

transformers' ``Conv1D`` (GPT-2, GPT-J-style: weight (nx, nf), y = x W + b) is a Linear nx → nf that
stores its weight transposed; it is described as that Linear (as PEFT treats it), recognised by
:func:`is_transposed_linear` without importing transformers, and :meth:`DenseSpec.build` gives back a
``Conv1D``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # index n − 1 holds the n-d conv
_CONV_FNS = (F.conv1d, F.conv2d, F.conv3d)
_AXIS_NAMES = ((), ("k",), ("k_h", "k_w"), ("k_d", "k_h", "k_w"))


def is_transposed_linear(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (a Linear nx → nf holding its weight as (nx, nf)):
    by its class name and package and its ``nf``/``nx`` attributes, so transformers need not be imported."""
    cls = type(module)
    return (cls.__name__ == "Conv1D" and cls.__module__.split(".")[0] == "transformers"
            and isinstance(getattr(module, "nf", None), int) and isinstance(getattr(module, "nx", None), int))


def _tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)


@dataclass(frozen=True)
class DenseSpec:
    """Shape and geometry of a dense ``nn.Linear`` or ``nn.Conv1d``/``Conv2d``/``Conv3d``.

    The weight is ``(c_out, c_in, *kernel_size)`` with ``len(kernel_size)`` = n spatial axes
    (0 for Linear). ``stride``, ``dilation`` and a tuple ``padding`` have one entry per axis;
    ``padding`` keeps the constructor's argument (or ``'same'``/``'valid'``) so :meth:`build`
    recreates an identical module. ``transposed_type`` is the class of a Linear that stores its weight
    transposed (transformers' ``Conv1D``), ``None`` for ``nn.Linear``/``nn.Conv{1,2,3}d``.
    """

    out_channels: int
    in_channels: int
    has_bias: bool
    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] | str = ()
    dilation: tuple[int, ...] = ()
    padding_mode: str = "zeros"
    transposed_type: type | None = None

    @classmethod
    def from_module(cls, module: nn.Module) -> DenseSpec:
        """Describe ``module``; raises ``TypeError``/``NotImplementedError`` for what we cannot factorize."""
        if isinstance(module, nn.Linear):
            return cls(module.out_features, module.in_features, module.bias is not None)
        if is_transposed_linear(module):
            return cls(module.nf, module.nx, module.bias is not None, transposed_type=type(module))
        if isinstance(module, CONV_TYPES):
            if module.groups != 1:
                raise NotImplementedError(
                    f"groups={module.groups} is not supported: factorized convolutions need groups=1"
                )
            n = len(module.kernel_size)
            padding = module.padding if isinstance(module.padding, str) else _tuple(module.padding, n)
            return cls(
                module.out_channels,
                module.in_channels,
                module.bias is not None,
                _tuple(module.kernel_size, n),
                _tuple(module.stride, n),
                padding,
                _tuple(module.dilation, n),
                module.padding_mode,
            )
        raise TypeError(
            f"module must be nn.Linear, nn.Conv1d/Conv2d/Conv3d or transformers' Conv1D, got {type(module).__name__}"
        )

    def dense_weight(self, module: nn.Module) -> Tensor:
        """``module``'s weight laid out as :attr:`weight_shape` (a transposed Linear's transposed back)."""
        return self.from_module_layout(module.weight)

    def from_module_layout(self, stored: Tensor) -> Tensor:
        """A weight as the dense module stores it (:attr:`module_weight_shape`) → :attr:`weight_shape`."""
        return stored.T if self.transposed_type is not None else stored

    @property
    def module_weight_shape(self) -> tuple[int, ...]:
        """The dense module's ``weight.shape``: :attr:`weight_shape`, or (c_in, c_out) for a transposed Linear."""
        return self.weight_shape[::-1] if self.transposed_type is not None else self.weight_shape

    # ----------------------------------------------------------------------------- shapes
    @property
    def n_spatial(self) -> int:
        """Spatial axes of the dense op: 0 (Linear), 1, 2 or 3 (Conv1d/2d/3d)."""
        return len(self.kernel_size)

    @property
    def is_conv(self) -> bool:
        return self.n_spatial > 0

    @property
    def kind(self) -> str:
        """``"linear"`` or ``"conv1d"``/``"conv2d"``/``"conv3d"``."""
        return f"conv{self.n_spatial}d" if self.is_conv else "linear"

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """``(c_out, c_in, *kernel_size)``: the dense module's weight, what layers reconstruct."""
        return (self.out_channels, self.in_channels, *self.kernel_size)

    @property
    def factor_axes(self) -> tuple[int, ...]:
        """Spatial axes whose kernel size exceeds 1: the kernel's factor modes, in order."""
        return tuple(a for a, k in enumerate(self.kernel_size) if k > 1)

    @property
    def factor_kernel(self) -> tuple[int, ...]:
        """Kernel sizes along :attr:`factor_axes` (``()`` for Linear and 1×1 convs)."""
        return tuple(self.kernel_size[a] for a in self.factor_axes)

    @property
    def mode_names(self) -> tuple[str, ...]:
        """Names of the factor modes, e.g. ``("k_h", "k_w")``; ``("k_w",)`` for a (1, 5) kernel."""
        names = _AXIS_NAMES[self.n_spatial]
        return tuple(names[a] for a in self.factor_axes)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """``(c_out, c_in, *factor_kernel)``: the order-(2 + d) tensor the tensor families decompose.

        It is :attr:`weight_shape` without its size-1 kernel axes (same entries, same order).
        """
        return (self.out_channels, self.in_channels, *self.factor_kernel)

    @property
    def n_row_modes(self) -> int:
        """How many leading factor modes the matricization puts with c_out (⌊d/2⌋, see :meth:`unfold`)."""
        return len(self.factor_axes) // 2

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(c_out·Π row-mode sizes, c_in·Π column-mode sizes)`` of :meth:`unfold` on the weight."""
        split = self.n_row_modes
        rows = math.prod(self.factor_kernel[:split])
        return self.out_channels * rows, self.in_channels * math.prod(self.factor_kernel[split:])

    def unfold(self, tensor: Tensor) -> Tensor:
        """The matricization of a tensor laid out as :attr:`tensor_shape` (any mode sizes).

        T (a, b, m_1, …, m_d) ↦ T₍ₘₐₜ₎[(a, m_1…m_p), (b, m_{p+1}…m_d)] with p = :attr:`n_row_modes`:
        (c_out·k_h) × (c_in·k_w) for a 2-D kernel, c_out × (c_in·k) for a 1-D one, c_out × c_in for
        Linear and 1×1. Its column modes are the ones a 1-D-first separable forward applies first.
        """
        p = self.n_row_modes
        order = (0, *range(2, 2 + p), 1, *range(2 + p, tensor.ndim))
        tensor = tensor.permute(order)
        return tensor.reshape(math.prod(tensor.shape[: 1 + p]), -1)

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def num_params(self) -> int:
        """Parameters of the dense layer: weight plus bias."""
        return self.weight_numel + (self.out_channels if self.has_bias else 0)

    @property
    def fan_in(self) -> int:
        return self.in_channels * math.prod(self.kernel_size)

    @property
    def default_std(self) -> float:
        """Std of PyTorch's default init, ``kaiming_uniform_(a=√5)``: U(±1/√fan_in)."""
        return 1.0 / math.sqrt(3.0 * self.fan_in)

    # ----------------------------------------------------------------------------- padding
    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """Explicit padding ``(before, after)`` this conv applies, per spatial axis."""
        if self.padding == "valid":
            return ((0, 0),) * self.n_spatial
        if self.padding == "same":
            out = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                out.append((total // 2, total - total // 2))  # PyTorch puts the odd extra pixel last
            return tuple(out)
        return tuple((p, p) for p in self.padding)

    @property
    def pads_up_front(self) -> bool:
        """Whether :meth:`pad_input` pads every axis itself (non-zero mode or asymmetric padding)."""
        return self.padding_mode != "zeros" or any(b != a for b, a in self.pads)

    def pad_input(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """Apply what the per-axis convs over :attr:`factor_axes` cannot; x is (*, c_in, *spatial).

        That is asymmetric or non-zero padding (all axes), and the padding and stride of the
        size-1 kernel axes (a 1-tap conv with stride s keeps every s-th padded position).
        Returns ``(x, pad)``: ``pad`` is the symmetric zero padding per axis left for the
        convolutions themselves (cheapest), 0 where it was applied here.
        """
        pads, n = self.pads, self.n_spatial
        up_front = self.pads_up_front
        here = [p if up_front or k == 1 else (0, 0) for p, k in zip(pads, self.kernel_size)]
        if any(any(p) for p in here):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, [v for p in reversed(here) for v in p], mode=mode)
        index = [slice(None)] * x.ndim
        for a, (k, s) in enumerate(zip(self.kernel_size, self.stride)):
            if k == 1 and s > 1:
                index[x.ndim - n + a] = slice(None, None, s)
        if any(i != slice(None) for i in index):
            x = x[tuple(index)]
        return x, tuple(0 if up_front or k == 1 else b for (b, _), k in zip(pads, self.kernel_size))

    # ----------------------------------------------------------------------------- apply
    def axis_conv(
        self, x: Tensor, weight: Tensor, axes: Sequence[int], pad: Sequence[int], groups: int = 1
    ) -> Tensor:
        """Convolve ``x`` (N, C, *spatial) by ``weight`` using this conv's geometry on ``axes`` only.

        ``weight`` is (o, C/groups, *k) with one entry per spatial axis, 1 outside ``axes``;
        outside ``axes`` the conv has stride 1, no padding, dilation 1. ``pad`` is the symmetric
        padding per axis returned by :meth:`pad_input` (size-1 axes are already done there).
        """
        def on_axes(values: Sequence[int], off: int) -> tuple[int, ...]:
            return tuple(v if a in axes else off for a, v in enumerate(values))

        return _CONV_FNS[self.n_spatial - 1](
            x,
            weight,
            stride=on_axes(self.stride, 1),
            padding=on_axes(pad, 0),
            dilation=on_axes(self.dilation, 1),
            groups=groups,
        )

    def bias_view(self, bias: Tensor) -> Tensor:
        """``bias`` (c_out,) shaped to broadcast against an output (N, c_out, *spatial) or (*, c_out)."""
        return bias.view(-1, *(1,) * self.n_spatial)

    def functional(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The dense layer's forward with an explicit ``weight`` of shape :attr:`weight_shape`."""
        if not self.is_conv:
            return F.linear(x, weight, bias)
        x, pad = self.pad_input(x)
        out = self.axis_conv(x, weight, self.factor_axes, pad)
        return out if bias is None else out + self.bias_view(bias)

    def build(self, weight: Tensor, bias: Tensor | None) -> nn.Module:
        """A dense ``nn.Linear``/``nn.Conv{n}d`` (or the transposed Linear's own class) with this geometry
        holding ``weight`` (laid out as :attr:`weight_shape`) and ``bias``."""
        factory = dict(device=weight.device, dtype=weight.dtype)
        if self.transposed_type is not None:  # Conv1D(nf, nx) takes no factory arguments
            module: nn.Module = self.transposed_type(self.out_channels, self.in_channels).to(**factory)
            weight = weight.T
        elif self.is_conv:
            module = CONV_TYPES[self.n_spatial - 1](
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


def matricize(weight: Tensor, spec: DenseSpec) -> Tensor:
    """The matrix W₍ₘₐₜ₎ = :meth:`DenseSpec.unfold` of a dense weight of shape ``spec.weight_shape``.

    (c_out·k_h) × (c_in·k_w) for a 2-D kernel, W₍ₘₐₜ₎[(o, h), (i, w)] = W[o, i, h, w]; c_out × (c_in·k)
    for a 1-D one (and a (1, k) 2-D one: size-1 axes are dropped first); (c_out·k_d) × (c_in·k_h·k_w)
    for 3-D; a Linear or 1×1 weight is the c_out × c_in matrix. This is the matricization the
    low-rank family factorizes, and the one whose singular values
    :meth:`~tdecomp.layers.base.FactorizedLayer.singular_values` reports for every family (so
    spectra are comparable).
    """
    return spec.unfold(weight.reshape(spec.tensor_shape))
