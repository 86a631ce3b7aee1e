"""Figures from short dense / FD / factor-WD runs: files, non-empty images, lines per run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from tdecomp.analysis import plots  # noqa: E402
from tdecomp.cli import main  # noqa: E402
from tdecomp.config import load_config  # noqa: E402
from tdecomp.train import train  # noqa: E402

FAST = dict(model="cnn", model_kwargs={"width": 0.25}, data="digits", subset=96, batch_size=32, epochs=2,
            lr=0.05, rank=0.3, progress=False, track_every=1)
RUNS = {"dense": dict(family="dense"), "fd": dict(family="lowrank", reg="fd"), "wd": dict(family="lowrank", reg="wd")}


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, overrides in RUNS.items():
        train(load_config(None, {**FAST, **overrides, "out": str(root / name)}))
    return [root / name for name in RUNS]


def test_labels_and_legend_one_entry_per_run(run_dirs):
    runs = plots.load_runs(run_dirs)
    assert [r.label for r in runs] == ["dense", "lowrank SI+FD", "lowrank SI+WD"]
    fig = plots.effective_step(runs)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [r.label for r in runs]
    plt.close(fig)


@pytest.mark.parametrize("name,lines_in_aggregate", [
    ("weight_norm", 3), ("effective_step", 3), ("stable_rank", 3),
    ("nuclear_norm", 5),  # nuclear norm for all 3, the factor bound for the 2 factorized runs
    ("balancedness", 2),  # factorized runs only
])
def test_dynamics_figures_have_the_expected_lines(run_dirs, name, lines_in_aggregate):
    runs = plots.load_runs(run_dirs)
    fig = plots.FIGURES[name](runs)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 1 + 4  # aggregate + the 4 convs factorized in the low-rank runs
    for ax in axes:
        assert len(ax.get_lines()) == lines_in_aggregate
        assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel()
        for line in ax.get_lines():
            # every step 1…6 recorded (3 steps per epoch, 2 epochs), and step 0 where defined
            assert list(line.get_xdata())[-6:] == [1, 2, 3, 4, 5, 6]
    plt.close(fig)


def test_angular_update_draws_each_distinct_equilibrium_once(run_dirs):
    runs = plots.load_runs(run_dirs)
    fig = plots.angular_update(runs)
    for ax in (ax for ax in fig.axes if ax.get_visible()):
        solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        dashed = [tuple(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(solid) == 3 and dashed and len(set(dashed)) == len(dashed)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()][:3] == [r.label for r in runs]
    plt.close(fig)


def test_legend_lists_only_runs_the_figure_draws(run_dirs):
    fig = plots.balancedness(plots.load_runs(run_dirs))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["lowrank SI+FD", "lowrank SI+WD"]  # no "dense"
    plt.close(fig)


def test_colours_follow_the_method_and_markers_the_family(run_dirs):
    from tdecomp.analysis.style import METHOD_COLOURS, family_marker

    runs = plots.load_runs(run_dirs)
    assert [r.colour for r in runs] == [METHOD_COLOURS[m] for m in ("dense", "SI+FD", "SI+WD")]
    assert [r.marker for r in runs] == [family_marker(f) for f in ("dense", "lowrank", "lowrank")]
    assert runs[0].marker != runs[1].marker


def test_training_curves_one_line_per_run_per_panel(run_dirs):
    fig = plots.training_curves(plots.load_runs(run_dirs))
    assert [len(ax.get_lines()) for ax in fig.axes] == [3, 3, 3]
    assert [len(line.get_xdata()) for line in fig.axes[2].get_lines()] == [2, 2, 2]  # epochs
    assert fig.axes[2].get_ylabel() == "test accuracy (%)"
    assert max(max(line.get_ydata()) for line in fig.axes[2].get_lines()) > 1  # percent, not fraction
    plt.close(fig)


def test_tdecomp_plot_writes_non_empty_png_and_pdf(run_dirs, tmp_path, capsys):
    assert main(["plot", *map(str, run_dirs), "--out", str(tmp_path)]) == 0
    for name in plots.FIGURES:
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        assert pdf.stat().st_size > 1000
        image = mpimg.imread(png)
        assert image.shape[0] > 300 and image.shape[1] > 600
        assert image[..., :3].std() > 0.05, f"{name}.png looks blank"
    assert "wrote" in capsys.readouterr().out


def test_untracked_run_gets_training_curves_only(tmp_path):
    out = tmp_path / "plain"
    train(load_config(None, {**FAST, "track_every": 0, "epochs": 1, "out": str(out)}))
    written = plots.plot_runs([out], tmp_path / "figs", formats=("png",))
    assert [p.name for p in written] == ["training_curves.png"]
    assert main(["plot", str(tmp_path / "missing")]) == 2  # a user error, not a traceback
