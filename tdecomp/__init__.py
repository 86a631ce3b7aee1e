"""tdecomp: factorized neural layers (low-rank, CP, Tucker, TT) with spectral initialization
and Frobenius decay (Khodak, Tenenholtz, Mackey, Fusi, ICLR 2021) for every family."""

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
from .regularize import frobenius_decay, param_groups
from .surgery import collapse_model, eligible_layers, factorize, factorize_model, summarize

__version__ = "0.1.0"

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
    "collapse_model",
    "eligible_layers",
    "factorize",
    "factorize_model",
    "frobenius_decay",
    "get_family",
    "param_groups",
    "register_family",
    "summarize",
]
