"""Accuracy against parameter count across families and methods (mean ± std over seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Okabe–Ito: distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


AXES = {"params": "parameters (count, log scale)", "flops": "forward FLOPs per example (log scale)"}


def plot_accuracy_vs_params(rows: Sequence[dict], path: Path, title: str = "", x: str = "params") -> list[Path]:
    """Error-bar scatter: x = parameters or FLOPs (``x``, a key of :data:`AXES`; log scale), y = the
    rows' metric (test accuracy in %); colour = method, marker = family. ``rows`` come from
    :func:`tdecomp.results.aggregate`. Writes PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r.get("method", "all") for r in rows}, key=lambda m: (m != "dense", m))
    families = sorted({r.get("family", "all") for r in rows}, key=lambda f: (f != "dense", f))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    for r in rows:
        ax.errorbar(
            r[x],
            r["metric_mean"],
            yerr=r["metric_std"],
            capsize=3,
            linestyle="none",
            color=PALETTE[methods.index(r.get("method", "all")) % len(PALETTE)],
            marker=MARKERS[families.index(r.get("family", "all")) % len(MARKERS)],
            markersize=7,
        )
    # legend: one entry per method (colour) and per family (marker)
    handles = [
        plt.Line2D([], [], color=PALETTE[i % len(PALETTE)], marker="o", linestyle="none", label=m)
        for i, m in enumerate(methods)
    ]
    handles += [
        plt.Line2D([], [], color="0.4", marker=MARKERS[i % len(MARKERS)], linestyle="none", label=f)
        for i, f in enumerate(families)
        if f not in methods
    ]
    ax.legend(handles=handles, fontsize=8, ncol=2, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel(AXES[x])
    ax.set_ylabel(rows[0]["metric"] if rows else "test acc (%)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    written = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        fig.savefig(target, dpi=150)
        written.append(target)
    plt.close(fig)
    return written
