"""What a run's ``reg`` setting means, in one place: which parameters get plain weight decay, the
Frobenius-decay coefficient, rebalancing, the decay strength a run applies, and its label.

Under every ``reg`` the dense weights (ndim ≥ 2 outside factorized modules) keep plain weight
decay ``weight_decay`` (and biases/norms too with ``decay_norms``). The factors of factorized
modules get, with λ_FD = ``fd_coef`` (``weight_decay`` when null):

======  ===================================================  =============================
reg     factors                                              decay strength λ
======  ===================================================  =============================
fd      no weight decay; λ_FD/2·Σ‖W‖²_F of the products in    λ_FD (weight_decay if λ_FD = 0)
        the loss (λ_FD = 0: plain weight decay instead, the
        official code without ``--wd2fd``); rebalanced after
        each step unless ``rebalance: false``
wd      weight decay ``weight_decay``                          weight_decay
crs     weight decay ``weight_decay × p`` with p the model's   weight_decay × p
        parameter ratio (deficient-efficient main.py:608-619)
none    nothing                                               0
======  ===================================================  =============================

``family: dense`` runs report λ = ``weight_decay``, the decay of their (dense) weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .config import TrainConfig, default_values
from .regularize import frobenius_decay, param_groups

NOREBAL = "-norebal"  # label suffix of FD runs with rebalancing switched off


@dataclass(frozen=True)
class RegPolicy:
    """The regularization of one run, read from its config (:meth:`from_config`)."""

    reg: str  # fd | wd | crs | none
    weight_decay: float
    fd_strength: float  # λ_FD: fd_coef, or weight_decay when fd_coef is null (used only under reg=fd)
    rebalance: bool | None  # the config's setting; None: on under reg=fd
    decay_norms: bool
    fd_skip: tuple[str, ...]
    wd_skip: tuple[str, ...]  # modules taken out of weight decay (fd_no_decay: factorized reg=fd runs only)
    dense: bool  # family == "dense"

    @classmethod
    def from_config(cls, config: TrainConfig | Mapping[str, Any]) -> RegPolicy:
        """From a :class:`TrainConfig` or a run's saved ``config.yaml`` mapping (missing keys: defaults)."""
        # a key added after a saved config was written ran at its default (as TrainConfig.conflicts)
        values = config.to_dict() if isinstance(config, TrainConfig) else {**default_values(), **config}
        weight_decay = float(values["weight_decay"])
        fd_coef = values["fd_coef"]
        return cls(
            reg=values["reg"],
            weight_decay=weight_decay,
            fd_strength=weight_decay if fd_coef is None else float(fd_coef),
            rebalance=values["rebalance"],
            decay_norms=values["decay_norms"],
            fd_skip=tuple(values["fd_skip"]),
            # the official no_decay lists exist in factorized --wd2fd runs only (docs/fidelity.md row 11)
            wd_skip=tuple(values["fd_no_decay"]) if values["reg"] == "fd" and values["family"] != "dense" else (),
            dense=values["family"] == "dense",
        )

    @property
    def applies_fd(self) -> bool:
        """Whether the loss carries the FD term (also for a ``family: dense`` model built with
        factorized modules, e.g. factorized attention)."""
        return self.reg == "fd"

    @property
    def fd_coef(self) -> float:
        """λ_FD of the loss term λ_FD/2·Σ‖W‖²_F; 0 unless ``reg=fd``."""
        return self.fd_strength if self.applies_fd else 0.0

    @property
    def rebalances(self) -> bool:
        """Whether :func:`tdecomp.rebalance` runs after each optimizer step: ``rebalance``, or by
        default under ``reg=fd`` (FD cannot hold factor norms balanced; plain weight decay on the
        factors does, and ``reg=wd``/``none`` stay the unmodified baselines)."""
        return self.applies_fd if self.rebalance is None else self.rebalance

    def factor_weight_decay(self, param_ratio: float) -> float:
        """Plain weight decay of the factors; ``param_ratio``: the model's parameters / dense (crs)."""
        if self.reg == "fd":
            return 0.0 if self.fd_coef > 0 else self.weight_decay
        if self.reg == "crs":
            return self.weight_decay * param_ratio
        return self.weight_decay if self.reg == "wd" else 0.0

    def decay_coefficient(self, param_ratio: float) -> float:
        """λ, the decay strength this run applies to its factorized weights (table in the module
        docstring): FD's plus the factors' plain weight decay; ``weight_decay`` for dense runs."""
        if self.dense:
            return self.weight_decay
        return self.fd_coef + self.factor_weight_decay(param_ratio)

    def param_groups(self, model: nn.Module, param_ratio: float) -> list[dict]:
        """:func:`tdecomp.param_groups` of ``model`` with the factors' decay of this policy."""
        groups = param_groups(model, self.weight_decay, self.fd_coef, decay_norms=self.decay_norms,
                              wd_skip=self.wd_skip)
        for group in groups:
            if group["name"] == "factors":
                group["weight_decay"] = self.factor_weight_decay(param_ratio)
        return groups

    def penalty(self, model: nn.Module) -> Tensor:
        """The loss term λ_FD/2·Σ‖W‖²_F (call only when :attr:`applies_fd`)."""
        return 0.5 * self.fd_coef * frobenius_decay(model, self.fd_skip)

    def reg_label(self) -> str:
        """``FD``, ``WD``, ``CRS`` or ``none``; ``FD-norebal`` for FD with ``rebalance: false``."""
        label = self.reg if self.reg == "none" else self.reg.upper()
        return label + (NOREBAL if self.applies_fd and self.rebalance is False else "")

