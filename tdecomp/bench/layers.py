"""Layer suite: forward+backward of dense, tdecomp and tensorly-torch convolutions, side by side.

For each conv shape, parameter ratio and batch size, every candidate is timed round-robin
(:func:`~tdecomp.bench.timing.time_interleaved`) on the same input and output gradient:

- ``dense``: ``nn.Conv2d(c, c, 3, padding=1, bias=False)``;
- ``tdecomp/<family>/<implementation>``: each family at the ratio, implementations
  ``factorized``, ``reconstructed`` and ``auto`` (whose pick is recorded);
- ``tltorch/<family>/<implementation>``: tensorly-torch's ``FactorizedConv`` (CP, Tucker, TT)
  built with tdecomp's explicit ranks, so parameter counts are identical (tltorch's float rank
  squashes Tucker's spatial modes and undershoots TT's budget; its TT conv uses our mode order
  (c_in, k_h, k_w, c_out)), then ``reset_parameters()`` (tltorch leaves factors uninitialized
  otherwise).

One call is ``zero grads → y = layer(x) → y.backward(g)`` with ``x.requires_grad`` (as inside a
network) and a dense random ``g`` (``y.sum().backward()`` would hand convolutions a stride-0
gradient and time a slow path no training step takes). FLOPs are counted independently of the
layers' own cost models, with :class:`torch.utils.flop_counter.FlopCounterMode` on the forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .._tltorch import pytorch_backend
from ..layers.execution import IMPLEMENTATIONS
from ..layers.registry import FAMILIES, get_family
from ..surgery import factorize
from .timing import Stats, paired_ratio, time_interleaved

TLTORCH_IMPLEMENTATIONS = IMPLEMENTATIONS[:2]


@dataclass(frozen=True)
class ConvCase:
    """A c→c 3×3 stride-1 conv of ``model`` applied to ``size``×``size`` feature maps."""

    model: str
    channels: int
    size: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.channels}→{self.channels} @{self.size}px"


CASES = (
    ConvCase("ResNet-32×2", 32, 32),
    ConvCase("ResNet-32×2", 64, 16),
    ConvCase("ResNet-32×2", 128, 8),
    ConvCase("VGG-19", 256, 8),
    ConvCase("VGG-19", 512, 4),
    ConvCase("VGG-19", 512, 2),
    ConvCase("WRN-28-10", 160, 32),
    ConvCase("WRN-28-10", 320, 16),
    ConvCase("WRN-28-10", 640, 8),
)
QUICK_CASES = (CASES[1], CASES[4], CASES[7])


def forward_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 per multiply-accumulate) of ``module(x)`` as counted by ``FlopCounterMode``."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def tltorch_families() -> tuple[str, ...]:
    """The registered families with a tensorly-torch counterpart (their ``tltorch`` format), sorted."""
    return tuple(name for name in FAMILIES.names() if get_family(name).tltorch is not None)


def tltorch_conv(conv: nn.Conv2d, family: str, implementation: str, like: nn.Module) -> nn.Module:
    """tensorly-torch ``FactorizedConv`` replacing ``conv`` at the budget of tdecomp layer ``like``
    (its ranks in tltorch's convention, the family's ``tltorch`` format).

    Its forward must run under :func:`tdecomp._tltorch.pytorch_backend`.
    """
    import tltorch

    fmt = get_family(family).tltorch
    module = tltorch.FactorizedConv(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        order=2,
        stride=conv.stride,
        padding=conv.padding,
        factorization=fmt.factorization,
        rank=fmt.rank(tuple(like.rank)),
        implementation=implementation,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    module.reset_parameters()
    return module


def _candidates(conv: nn.Conv2d, ratio: float) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {"dense": conv}
    for family in FAMILIES.names():
        for impl in IMPLEMENTATIONS:
            out[f"tdecomp/{family}/{impl}"] = factorize(conv, family, ratio, init="random", implementation=impl)
    for family in tltorch_families():
        like = out[f"tdecomp/{family}/factorized"]
        for impl in TLTORCH_IMPLEMENTATIONS:
            out[f"tltorch/{family}/{impl}"] = tltorch_conv(conv, family, impl, like)
    return out


def _step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None  # as optimizer.zero_grad(set_to_none=True): no accumulation
        x.grad = None
        module(x).backward(grad)

    return step


def run_case(
    case: ConvCase,
    ratio: float,
    batch: int,
    device: torch.device,
    repeats: int,
    warmup: int,
) -> list[dict]:
    """Time every candidate on one (shape, ratio, batch); one row per candidate."""
    conv = nn.Conv2d(case.channels, case.channels, 3, padding=1, bias=False, device=device)
    modules = _candidates(conv, ratio)
    x = torch.randn(batch, case.channels, case.size, case.size, device=device, requires_grad=True)
    grad = torch.randn(batch, case.channels, case.size, case.size, device=device)
    with pytorch_backend():  # tltorch's forward dispatches through tensorly; ours never does
        times = time_interleaved({k: _step(m, x, grad) for k, m in modules.items()}, repeats, warmup, device)
        flops = {k: forward_flops(m, x) for k, m in modules.items()}
    dense_params = conv.weight.numel()
    rows = []
    for name, module in modules.items():
        library, family, impl = name.split("/") if "/" in name else (name, name, name)
        params = sum(p.numel() for p in module.parameters())
        row = {
            "model": case.model,
            "shape": case.label,
            "channels": case.channels,
            "size": case.size,
            "batch": batch,
            "ratio": ratio,
            "name": name,
            "library": library,
            "family": family,
            "implementation": impl,
            "params": params,
            "param_ratio": params / dense_params,
            "flop_ratio": flops[name] / flops["dense"],
            **Stats.of(times[name]).as_dict(),
            "vs_dense": paired_ratio(times[name], times["dense"]),
        }
        if impl == "auto":
            row["auto_choice"] = module.chosen_implementation  # what it decided on its first forward
        rows.append(row)
    _add_tltorch_speedups(rows, times)
    return rows


def _add_tltorch_speedups(rows: list[dict], times: dict[str, list[float]]) -> None:
    """``vs_tltorch`` on tdecomp rows: tltorch's faster implementation's time / this row's time."""
    for row in rows:
        if row["library"] != "tdecomp" or get_family(row["family"]).tltorch is None:
            continue
        tl = [f"tltorch/{row['family']}/{impl}" for impl in TLTORCH_IMPLEMENTATIONS]
        best = min(tl, key=lambda k: Stats.of(times[k]).median_ms)
        row["tltorch_best"] = best
        row["vs_tltorch"] = 1.0 / paired_ratio(times[row["name"]], times[best])


def run(
    cases: Iterable[ConvCase],
    ratios: Sequence[float],
    batch_sizes: Sequence[int],
    device: torch.device,
    repeats: int,
    warmup: int,
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """All rows of the layer suite; ``progress(label)`` is called after each setting."""
    rows = []
    for case in cases:
        for ratio in ratios:
            for batch in batch_sizes:
                rows += run_case(case, ratio, batch, device, repeats, warmup)
                progress(f"{case.label} ratio={ratio} batch={batch}")
    return rows
