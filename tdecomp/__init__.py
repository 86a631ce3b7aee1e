"""tdecomp: factorized neural layers (low-rank, CP, Tucker, TT) with spectral initialization
and Frobenius decay (Khodak, Tenenholtz, Mackey, Fusi, ICLR 2021) for every family."""

import os

from . import models  # the model registry: tdecomp.models.create("resnet20", num_classes=10)
from ._svd import si_solver
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

# analysis/ and experiments/ sit next to this package in a source checkout and install into it
# (pyproject.toml's package-dir). Resolve them from the checkout this package was imported from,
# not from whichever copy an (editable) install points at.
_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "analysis")) and os.path.isfile(
    os.path.join(_checkout, "analysis", "__init__.py")
):
    __path__.append(_checkout)

from . import analysis  # noqa: E402,F401  (last: it registers the trainer's config-key callbacks)

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
    "load",
    "models",
    "param_groups",
    "rebalance",
    "register_family",
    "save",
    "si_solver",
    "summarize",
]
