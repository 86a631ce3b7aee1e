"""Factorized layers: one base class (:mod:`.base`), one file per family, one registry (:mod:`.registry`).

The base class's helpers live by job: rank parsing (:mod:`.ranks`), the cost model (:mod:`.cost`),
module walks and functional calls (:mod:`.walk`), the dense geometry (:mod:`.spec`), SI as every layer
gets it (:mod:`.spectral`: precision, meta, padding of zero or rank-deficient weights), data-aware
(whitened) SI and the calibration statistics it reads (:mod:`.whitening`).
"""

from .attention import ATTENTION_FAMILIES, AttentionSpec, FactorizedMultiheadAttention
from .base import FactorizedLayer
from .cp import CPLayer
from .execution import IMPLEMENTATIONS
from .factorized import Factorized
from .lowrank import LowRankLayer
from .ranks import RankScale
from .registry import available_families, get_family, register_family
from .spec import DenseSpec
from .tt import TTLayer
from .tucker import TuckerLayer
from .whitening import LayerStats

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
    "LayerStats",
    "LowRankLayer",
    "TTLayer",
    "TuckerLayer",
    "available_families",
    "get_family",
    "register_family",
]
