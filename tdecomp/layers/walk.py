"""Walking a model's modules, and evaluating a module's method at other tensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import UnionType
from typing import Any

import torch
from torch import Tensor, nn


def named_outermost(
    model: nn.Module, kinds: type | tuple[type, ...] | UnionType, remove_duplicate: bool = True
) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of the modules of ``kinds`` in ``model`` that are not inside
    another one of them (e.g. a separable block's TT layer is owned by the block), in
    ``named_modules`` order; ``remove_duplicate`` as in :meth:`nn.Module.named_modules`."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules(remove_duplicate=remove_duplicate):
        # pre-order: the descendants of the last module found come right after it
        if found and (found[-1][0] == "" or name.startswith(f"{found[-1][0]}.")):
            continue
        if isinstance(module, kinds):
            found.append((name, module))
    return found


class _Apply(nn.Module):
    """``fn(module)`` (or ``module.<fn>()``) as a forward: the one module :func:`call_with` swaps tensors in."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, fn: str | Callable[[nn.Module], Any]) -> Any:
        return getattr(self.module, fn)() if isinstance(fn, str) else fn(self.module)


def call_with(module: nn.Module, fn: str | Callable[[nn.Module], Any], tensors: Mapping[str, Tensor]) -> Any:
    """``module.<fn>()`` (a method name) or ``fn(module)`` evaluated with the parameters and buffers
    named in ``tensors`` (keys as :meth:`nn.Module.named_parameters` gives them) replaced.

    A :func:`torch.func.functional_call`: differentiable w.r.t. ``tensors``, usable under
    ``vmap``, the module itself untouched — e.g. W or ‖W‖²_F at other factors, or in float64.
    """
    return torch.func.functional_call(_Apply(module), {f"module.{k}": t for k, t in tensors.items()}, (fn,))
