"""tdecomp: factorized neural layers (low-rank, CP, Tucker, TT) with spectral initialization
and Frobenius decay (Khodak, Tenenholtz, Mackey, Fusi, ICLR 2021) for every family."""

from typing import Any

from . import models  # the model registry: tdecomp.models.create("resnet20", num_classes=10)
from ._svd import si_solver
from .calibration import calibrate, fisher_information
from .layers import (
    CPLayer,
    DenseSpec,
    Factorized,
    FactorizedLayer,
    FactorizedMultiheadAttention,
    LowRankLayer,
    RankScale,
    TTLayer,
    TuckerLayer,
    available_families,
    get_family,
    register_family,
)
from .regularize import frobenius_decay, param_groups, rebalance
from .saving import load, save
from .surgery import collapse_model, eligible_layers, factorize, factorize_model, summarize

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``tdecomp.fit`` (:func:`tdecomp.train.trainer.fit`: train your own model on your own loaders),
    imported on first use: ``import tdecomp`` stays light and imports no training or analysis code."""
    if name == "fit":
        from .train.trainer import fit

        return fit
    raise AttributeError(f"module 'tdecomp' has no attribute {name!r}")


__all__ = [
    "CPLayer",
    "DenseSpec",
    "Factorized",
    "FactorizedLayer",
    "FactorizedMultiheadAttention",
    "LowRankLayer",
    "RankScale",
    "TTLayer",
    "TuckerLayer",
    "available_families",
    "calibrate",
    "collapse_model",
    "eligible_layers",
    "factorize",
    "factorize_model",
    "fisher_information",
    "fit",
    "frobenius_decay",
    "get_family",
    "load",
    "models",
    "param_groups",
    "rebalance",
    "register_family",
    "save",
    "si_solver",
    "summarize",
]
