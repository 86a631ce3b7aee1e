"""One look for every figure: a fixed colour per method and a fixed marker per family.

Colours are the Okabe–Ito palette (distinguishable under the common colour-vision deficiencies):
each regularizer gets a hue pair, dark for spectral init (SI) and light for random init, so a
reader can tell FD from WD at a glance in any figure. Markers: ``*`` for dense, then the
registered families take :data:`FAMILY_MARKERS` in sorted name order (the built-in four: cp ``s``,
lowrank ``o``, tt ``D``, tucker ``^``). Methods and families not listed (a label such as
``norm-matched``, a family name that is not registered) get the fallbacks, in first-seen order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tdecomp.layers.registry import available_families
from tdecomp.methods import NORM_MATCHED

METHOD_COLOURS: dict[str, str] = {
    "dense": "#000000",
    "SI+FD": "#0072B2",  # blue
    "random+FD": "#56B4E9",  # sky blue
    "SI+WD": "#D55E00",  # vermillion
    "random+WD": "#E69F00",  # orange
    "SI+none": "#009E73",  # bluish green
    "random+none": "#F0E442",  # yellow
}
NORM_MATCHED_COLOUR = "#CC79A7"  # reddish purple: a norm-matched run of any method
FALLBACK_COLOURS = ("#7F7F7F", "#8C564B", "#BCBD22", "#17BECF", "#9467BD")

DENSE_MARKER = "*"
FAMILY_MARKERS = ("s", "o", "D", "^", "v", "P", "X", "h")  # the registered families', in sorted name order
FALLBACK_MARKERS = ("<", ">", "p", "d")

# Okabe–Ito in a fixed order, for figures whose series are neither methods nor families
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

_seen_methods: list[str] = []
_seen_families: list[str] = []


def method_colour(method: str) -> str:
    """The colour of ``method`` (``SI+FD``, …; a trailing ``norm-matched`` takes its own colour). An
    official per-factor baseline init (``kaiming+WD``, ``fanout+FD``, …) takes random init's colour of
    its regularizer: a table has one baseline init, drawn in the baseline's hue."""
    init, plus, reg = method.partition("+")
    baseline = f"random+{reg}" if plus and init not in ("SI", "random") else method
    if baseline in METHOD_COLOURS:
        return METHOD_COLOURS[baseline]
    if method.endswith(NORM_MATCHED):
        return NORM_MATCHED_COLOUR
    if method not in _seen_methods:
        _seen_methods.append(method)
    return FALLBACK_COLOURS[_seen_methods.index(method) % len(FALLBACK_COLOURS)]


def family_marker(family: str) -> str:
    """The marker of ``family``: ``*`` for dense, the registered families' by their sorted names."""
    if family == "dense":
        return DENSE_MARKER
    registered = available_families()
    if family in registered:
        return FAMILY_MARKERS[registered.index(family) % len(FAMILY_MARKERS)]
    if family not in _seen_families:
        _seen_families.append(family)
    return FALLBACK_MARKERS[_seen_families.index(family) % len(FALLBACK_MARKERS)]


def save_figure(fig, path: Path, suffixes: Sequence[str] = (".png", ".pdf"), dpi: int = 150) -> list[Path]:
    """``fig`` written as ``path`` with each of ``suffixes`` (all figures at ``dpi``), then closed."""
    import matplotlib.pyplot as plt

    written = []
    for suffix in suffixes:
        target = path.with_suffix(suffix)
        fig.savefig(target, dpi=dpi)
        written.append(target)
    plt.close(fig)
    return written
