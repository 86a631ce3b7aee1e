"""Analysis of factorized training: dynamics tracking, comparisons across runs, figures."""

from .compare import plot_accuracy_vs_params
from .dynamics import DynamicsTracker, layer_series, read_dynamics
from .norm_matching import NormMatching
from .plots import plot_runs
from .style import METHOD_COLOURS, PALETTE, family_marker, method_colour

__all__ = [
    "METHOD_COLOURS",
    "PALETTE",
    "DynamicsTracker",
    "NormMatching",
    "family_marker",
    "layer_series",
    "method_colour",
    "plot_accuracy_vs_params",
    "plot_runs",
    "read_dynamics",
]
