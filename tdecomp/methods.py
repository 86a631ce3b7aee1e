"""Method labels: how a factorized run was initialized and regularized, as tables and sweeps name it.

A label is ``INIT+REG`` (decision D of the project): the init label (``spectral`` → ``SI``, an official
per-factor draw ``X-factors`` → ``X``, e.g. ``kaiming``; ``random`` and ``whitened`` stay) and the regularizer in
capitals (``FD``, ``WD``, ``CRS``; ``none``), with the suffix ``-norebal`` for Frobenius decay with
rebalancing switched off (``rebalance: false``). Dense runs are ``dense``. :data:`METHODS` maps every
label to the config values that produce it (the sweep's ``method`` pseudo-axis), derived from the init
and reg choice lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import CHOICES, default_values
from .init import DATA_INITS, FACTORIZED_INIT_METHODS
from .reg_policy import RegPolicy

DENSE = "dense"
NORM_MATCHED = "-norm-matched"  # suffix of a run rescaled to another run's norm trajectory (norm_match)
# config keys that mean nothing for a dense run: its rows read "—" there, a contrast against dense pairs
# with the dense row whatever these say, and a sweep's dense job keeps the base values of these keys
# whatever the method or rank axes say (allocation and distill only act when a trained model is factorized)
DENSE_IRRELEVANT = ("rank", "init", "reg", "rebalance", "allocation", "distill")


def init_label(init: str) -> str:
    """``SI`` for spectral init, ``kaiming`` for ``kaiming-factors`` (any ``X-factors`` → ``X``), else ``init``."""
    return "SI" if init == "spectral" else init.removesuffix("-factors")


def method_label(config: Mapping[str, Any]) -> str:
    """``dense`` or ``INIT+REG`` (``SI+FD``, ``kaiming+WD``, ``SI+FD-norebal``, …) from a run's config,
    ``-norm-matched`` appended for a run rescaled to an FD run's norms (``norm_match``, the paper's
    normalization experiment); absent keys take :class:`~tdecomp.config.TrainConfig`'s defaults."""
    values = {**default_values(), **config}
    if values["family"] == DENSE:
        return DENSE
    label = f"{init_label(values['init'])}+{RegPolicy.from_config(values).reg_label()}"
    return label + NORM_MATCHED if values.get("norm_match") else label


def _settings(init: str, reg: str, rebalance: bool | None) -> dict[str, Any]:
    """The config values of one method; FD fixes ``rebalance`` (null: on), the others leave it alone."""
    return {"init": init, "reg": reg, **({"rebalance": rebalance} if reg == "fd" else {})}


# the order of a table's methods: dense, then per regularizer (WD, CRS and none before FD, FD before its
# -norebal ablation) the baseline inits before SI, as the paper's columns, and the data-aware SI after it
_INIT_ORDER = sorted(FACTORIZED_INIT_METHODS, key=lambda init: (init in DATA_INITS, init == "spectral"))
_REG_ORDER = sorted(CHOICES["reg"], key=lambda reg: reg == "fd")
METHODS: dict[str, dict[str, Any]] = {DENSE: {"family": DENSE}} | {
    method_label({"family": "factorized", **settings}): settings
    for reg in _REG_ORDER
    for rebalance in ((None, False) if reg == "fd" else (None,))
    for settings in (_settings(init, reg, rebalance) for init in _INIT_ORDER)
}
METHOD_ORDER = tuple(METHODS)
