"""The learning-curve figure from a records file: a panel per family, train loss (log) over the
validation (else test) accuracy, one line per method at the mean over seeds with a 95% band."""

from __future__ import annotations

import json
import statistics

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import scipy.stats  # noqa: E402

from tdecomp.analysis.curves import learning_curves_figure  # noqa: E402
from tdecomp.analysis.style import METHOD_COLOURS  # noqa: E402
from tdecomp.cli import main  # noqa: E402
from tdecomp.records import load_runs  # noqa: E402

SETTINGS = {"dense": {"family": "dense"}, "SI+FD": {"init": "spectral", "reg": "fd"},
            "random+WD": {"init": "random", "reg": "wd"}}


def loss(family: str, method: str, seed: int, epoch: int) -> float:
    return (1.0 + 0.1 * seed**3 + 0.2 * len(method) + 0.05 * len(family)) / epoch  # mean ≠ median


def write_records(path, validation: bool):
    lines = []
    for family in ("dense", "lowrank", "tt"):
        for method in ("dense",) if family == "dense" else ("SI+FD", "random+WD"):
            for seed in range(3):
                acc = [0.5 + 0.1 * e + 0.01 * seed for e in range(1, 5)]
                curve = {"epoch": [1, 2, 3, 4], "train_loss": [loss(family, method, seed, e) for e in range(1, 5)],
                         "test_acc": acc, **({"val_acc": [a - 0.05 for a in acc]} if validation else {})}
                config = {"family": family, "rank": 0.1, "seed": seed, **SETTINGS[method]}
                lines.append({"run": f"{family}-{method}-{seed}", "config": config, "curve": curve,
                              "summary": {"test_acc": acc[-1], "params": 10, "param_ratio": 0.1, "time_s": 1.0}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("validation", [True, False])
def test_panels_rows_labels_and_mean_lines(tmp_path, validation):
    runs = load_runs([write_records(tmp_path / "r.jsonl", validation)])
    fig = learning_curves_figure(runs, ("family", "method", "rank"))
    assert len(fig.axes) == 4  # 2 families × (loss, accuracy)
    top = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in top] == ["lowrank", "tt"] and all(ax.get_yscale() == "log" for ax in top)
    assert fig.axes[0].get_ylabel() == "train loss (log scale)"
    assert fig.axes[2].get_ylabel() == ("val acc (%)" if validation else "test acc (%)")
    lowrank_loss = fig.axes[0]
    lines = lowrank_loss.get_lines()
    assert [line.get_color() for line in lines] == [METHOD_COLOURS[m] for m in ("SI+FD", "random+WD", "dense")]
    expected = [statistics.fmean(loss("lowrank", "SI+FD", s, e) for s in range(3)) for e in range(1, 5)]
    assert list(lines[0].get_ydata()) == pytest.approx(expected)
    assert len(lowrank_loss.collections) == 3  # a 95% band per line
    band = lowrank_loss.collections[0].get_paths()[0].vertices
    at_epoch_1 = sorted({y for x, y in band if x == 1})
    values = [loss("lowrank", "SI+FD", s, 1) for s in range(3)]
    low, high = scipy.stats.t.interval(0.95, 2, loc=statistics.fmean(values), scale=statistics.stdev(values) / 3**0.5)
    assert at_epoch_1 == pytest.approx([low, high], rel=1e-9)
    accuracy = fig.axes[2].get_lines()[0].get_ydata()
    first = [100 * (0.6 + 0.01 * s - (0.05 if validation else 0.0)) for s in range(3)]
    assert accuracy[0] == pytest.approx(statistics.fmean(first))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["SI+FD 0.1", "random+WD 0.1", "dense"]
    plt.close(fig)
    with pytest.raises(ValueError, match="panel key 'model'"):
        learning_curves_figure(runs, ("family", "method"), panel="model")


def test_runs_without_curves_draw_empty_panels(tmp_path):
    path = write_records(tmp_path / "r.jsonl", validation=False)
    lines = path.read_text().splitlines()
    path.write_text("".join(json.dumps({**json.loads(line), "curve": {}}) + "\n" for line in lines))
    fig = learning_curves_figure(load_runs([path]), ("family", "method"))
    assert len(fig.axes) == 4 and not fig.legends and not any(ax.get_lines() for ax in fig.axes)
    plt.close(fig)


def test_compare_curves_writes_the_figure(tmp_path, capsys):
    records = write_records(tmp_path / "r.jsonl", validation=True)
    assert main(["compare", str(records), "--by", "family,method,rank", "--out", str(tmp_path / "out"),
                 "--curves"]) == 0
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "learning_curves.pdf").is_file()
    figure = tmp_path / "fig" / "curves.png"
    assert main(["compare", str(records), "--by", "family,method", "--curves", "family", "--figure", str(figure),
                 "--tables", "long", "--out", str(tmp_path / "out2")]) == 0
    assert figure.is_file() and "learning_curves" in capsys.readouterr().out


def test_baseline_inits_take_the_random_hue_of_their_regularizer():
    from tdecomp.analysis.style import method_colour

    assert method_colour("kaiming+WD") == METHOD_COLOURS["random+WD"]
    assert method_colour("fanout+FD") == METHOD_COLOURS["random+FD"]
    assert method_colour("SI+FD") == METHOD_COLOURS["SI+FD"]
    assert method_colour("SI+FD-norebal") not in (METHOD_COLOURS["SI+FD"], METHOD_COLOURS["random+FD"])
