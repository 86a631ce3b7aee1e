"""The accuracy-vs-parameters figure: a panel per family, a line per method, readable ticks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from tdecomp.analysis.compare import accuracy_vs_params_figure  # noqa: E402
from tdecomp.analysis.style import METHOD_COLOURS, family_marker  # noqa: E402


def _row(family: str, method: str, rank: str, params: int, acc: float) -> dict:
    return dict(family=family, method=method, rank=rank, n=2, metric="test acc (%)", metric_mean=acc,
                metric_std=0.5, params=params, trained_params=params * 3, param_ratio=0.1, time_s=1.0)


def _rows(dense: bool) -> list[dict]:
    rows = [_row("dense", "dense", "—", 277_000, 99.0)] if dense else []
    for family, scale in (("lowrank", 1.0), ("cp", 0.9), ("tt", 1.1)):
        for method in ("SI+FD", "random+WD"):
            rows += [_row(family, method, r, int(p * scale), 97.0) for r, p in (("0.02", 8000), ("0.05", 8600),
                                                                               ("0.1", 30000))]
    return rows


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_one_panel_per_family_one_line_per_method_in_fixed_styles():
    fig = accuracy_vs_params_figure(_rows(dense=True))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["lowrank", "cp", "tt"]
    for ax in axes:
        lines = [line for line in ax.get_lines() if line.get_marker() not in ("_", "|", "None", None)]
        assert [line.get_color() for line in lines] == [METHOD_COLOURS["SI+FD"], METHOD_COLOURS["random+WD"]]
        assert {line.get_marker() for line in lines} == {family_marker(ax.get_title())}
        assert all(len(line.get_xdata()) == 3 for line in lines)  # one line through the three ranks
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["SI+FD", "random+WD", "dense (277k params)"]
    assert len({family_marker(ax.get_title()) for ax in axes}) == len(axes)  # one marker per family
    plt.close(fig)


def test_paired_difference_fields_stay_out_of_the_legend():
    rows = [dict(r, paired_vs="random+WD", diff_mean=0.5, diff_low=-1.0, diff_high=2.0, pairs=2)
            for r in _rows(dense=True)]
    fig = accuracy_vs_params_figure(rows)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["SI+FD", "random+WD", "dense (277k params)"]
    plt.close(fig)


def test_tick_labels_never_overlap_and_no_dense_entry_without_a_dense_run():
    for dense in (False, True):
        fig = accuracy_vs_params_figure(_rows(dense))
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in (ax for ax in fig.axes if ax.get_visible()):
            boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
            assert boxes and not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        (legend,) = fig.legends
        assert any("dense" in t.get_text() for t in legend.get_texts()) == dense
        plt.close(fig)


def test_one_panel_legend_wraps_inside_the_figure_and_any_x_field_keeps_one_line_per_method():
    rows = [r for r in _rows(dense=True) if r["family"] in ("dense", "lowrank")]
    rows += [dict(r, method=m) for r in rows if r["method"] == "SI+FD" for m in ("SI+WD", "random+FD")]
    for x in ("params", "trained_params"):
        fig = accuracy_vs_params_figure(rows, x=x)
        fig.canvas.draw()
        (legend,) = fig.legends
        assert len(legend.get_texts()) == 5  # four methods and dense: no other row field splits a line
        box, page = legend.get_window_extent(), fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1, (box, page)  # not clipped at the sides
        plt.close(fig)
