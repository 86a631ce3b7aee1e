"""Factorized layers: one base class, one file per family, one registry."""

from .attention import ATTENTION_FAMILIES, AttentionSpec, FactorizedMultiheadAttention
from .base import (
    IMPLEMENTATIONS,
    Factorized,
    FactorizedLayer,
    RankScale,
    available_families,
    get_family,
    register_family,
)
from .cp import CPLayer
from .lowrank import LowRankLayer
from .spec import DenseSpec
from .tt import TTLayer
from .tucker import TuckerLayer

__all__ = [
    "RankScale",
    "ATTENTION_FAMILIES",
    "IMPLEMENTATIONS",
    "AttentionSpec",
    "CPLayer",
    "DenseSpec",
    "Factorized",
    "FactorizedLayer",
    "FactorizedMultiheadAttention",
    "LowRankLayer",
    "TTLayer",
    "TuckerLayer",
    "available_families",
    "get_family",
    "register_family",
]
