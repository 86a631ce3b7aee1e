"""Analysis of factorized training: dynamics tracking, comparisons across runs, figures."""

from .compare import MARKERS, PALETTE, plot_accuracy_vs_params
from .dynamics import DynamicsTracker, layer_series, read_dynamics
from .norm_matching import NormMatching
from .plots import plot_runs

__all__ = [
    "MARKERS",
    "PALETTE",
    "DynamicsTracker",
    "NormMatching",
    "layer_series",
    "plot_accuracy_vs_params",
    "plot_runs",
    "read_dynamics",
]
