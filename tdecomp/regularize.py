"""Frobenius decay (FD) and optimizer parameter groups.

FD (Khodak et al. 2021) penalizes the reconstructed product, λ/2 Σ_layers ‖W‖²_F, instead of
plain weight decay on each factor, λ/2 Σ_factors ‖F‖²_F — the latter is a nuclear-norm-like
penalty a dense model never sees (½(‖U‖²+‖V‖²) ≥ ‖UVᵀ‖_*). FD enters as a loss term:

    groups = tdecomp.param_groups(model, weight_decay=1e-4, frobenius_decay=1e-4)
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    loss = criterion(model(x), y) + 0.5 * 1e-4 * tdecomp.frobenius_decay(model)

With SGD this equals the dense model's coupled weight decay applied to W. The factor group
carries its coefficient under the key ``"frobenius_decay"`` so a trainer can read it back.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers.base import Factorized

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def frobenius_decay(model: nn.Module) -> Tensor:
    """Σ ‖W‖²_F over the factorized modules of ``model``, from factor Gram identities (scalar).

    Nested factorized modules are counted once (the outermost one owns its factors).
    """
    terms = [m.frobenius_sq() for m in _outermost_factorized(model)]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    return torch.stack(terms).sum()


def _outermost_factorized(model: nn.Module) -> list[Factorized]:
    found: list[Factorized] = []

    def visit(module: nn.Module) -> None:
        if isinstance(module, Factorized):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return found


def param_groups(
    model: nn.Module, weight_decay: float, frobenius_decay: float = 0.0, decay_norms: bool = False
) -> list[dict]:
    """Optimizer parameter groups, each parameter in exactly one (shared ones once).

    - ``"decay"``: dense weights (ndim ≥ 2 outside factorized modules) with ``weight_decay``;
    - ``"factors"``: factors of factorized modules: plain ``weight_decay`` when
      ``frobenius_decay == 0`` (the factor-WD baseline), else none — FD then enters the loss as
      ``frobenius_decay / 2 * tdecomp.frobenius_decay(model)``;
    - ``"no_decay"``: biases, normalization parameters and other 1-D parameters; with
      ``decay_norms`` they get ``weight_decay`` too, as the official code does
      (microsoft/fnl_paper pytorch_resnet_cifar10/trainer.py:174-181, which groups by name only).
    Empty groups are omitted.
    """
    if weight_decay < 0 or frobenius_decay < 0:
        raise ValueError(
            f"weight_decay and frobenius_decay must be ≥ 0, got {weight_decay=}, {frobenius_decay=}"
        )
    seen: set[int] = set()
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "factors": [], "no_decay": []}

    def add(name: str, p: nn.Parameter) -> None:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            groups[name].append(p)

    for module in _outermost_factorized(model):
        for p in module.factor_parameters():
            add("factors", p)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_plain_weight = p.ndim >= 2 and not isinstance(module, _NORM_TYPES) and name != "bias"
            add("decay" if is_plain_weight else "no_decay", p)
    decay = {
        "decay": weight_decay,
        "factors": 0.0 if frobenius_decay > 0 else weight_decay,
        "no_decay": weight_decay if decay_norms else 0.0,
    }
    return [
        {"params": params, "weight_decay": decay[name], "name": name}
        | ({"frobenius_decay": frobenius_decay} if name == "factors" else {})
        for name, params in groups.items()
        if params
    ]
