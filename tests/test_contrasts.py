"""Contrasts between methods: parsing, per-seed evaluation within groups (checked by hand and against
scipy), the multiplicity family of one table, ``--paired-vs`` as a shorthand, and the printed table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import scipy.stats

from tdecomp.cli import main
from tdecomp.contrasts import parse_contrast, per_seed
from tdecomp.records import read_records
from tdecomp.results import aggregate, contrast_rows
from tdecomp.stats import holm, sign_flip_p

SETTINGS = {"SI+FD": {"init": "spectral", "reg": "fd"}, "SI+WD": {"init": "spectral", "reg": "wd"},
            "kaiming+FD": {"init": "kaiming-factors", "reg": "fd"},
            "kaiming+WD": {"init": "kaiming-factors", "reg": "wd"}, "dense": {"family": "dense"}}
# accuracy (fraction) per family, method and seed: hand-picked so every difference is known
ACC = {
    "lowrank": {"SI+FD": [0.90, 0.92, 0.91, 0.93], "SI+WD": [0.88, 0.89, 0.90, 0.88],
                "kaiming+FD": [0.85, 0.86, 0.84, 0.86], "kaiming+WD": [0.84, 0.86, 0.83, 0.85]},
    "cp": {"SI+FD": [0.80, 0.82, 0.79, 0.81], "SI+WD": [0.80, 0.81, 0.80, 0.80],
           "kaiming+FD": [0.78, 0.80, 0.79, 0.80], "kaiming+WD": [0.79, 0.80, 0.78, 0.81]},
}
DENSE = [0.95, 0.96, 0.94, 0.95]


def record(method: str, family: str, seed: int, acc: float) -> dict:
    config = {"model": "cnn", "data": "digits", "family": family, "rank": 0.1, "seed": seed, **SETTINGS[method]}
    return {"run": f"{family}_{method}_seed-{seed}", "config": config,
            "summary": {"test_acc": acc, "params": 100, "param_ratio": 0.1, "time_s": 1.0},
            "curve": {"epoch": [1, 2], "train_loss": [1.0, 0.5], "test_acc": [acc - 0.1, acc]}}


def write_records(path: Path, skip: tuple = ()) -> Path:
    lines = [record("dense", "dense", s, a) for s, a in enumerate(DENSE)]
    lines += [record(m, f, s, a) for f, methods in ACC.items() for m, accs in methods.items()
              for s, a in enumerate(accs) if (f, m, s) not in skip]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_parse_differences_interactions_and_labels_with_dashes():
    assert parse_contrast("SI+FD - kaiming+WD").weights == {"SI+FD": 1.0, "kaiming+WD": -1.0}
    inter = parse_contrast(" (SI+FD - SI+WD)  - (kaiming+FD - kaiming+WD)")
    assert inter.weights == {"SI+FD": 1.0, "SI+WD": -1.0, "kaiming+FD": -1.0, "kaiming+WD": 1.0}
    assert inter.text == "(SI+FD - SI+WD) - (kaiming+FD - kaiming+WD)"
    assert parse_contrast("SI+FD-norebal - SI+FD").weights == {"SI+FD-norebal": 1.0, "SI+FD": -1.0}
    assert parse_contrast("(A - B) - (A - C)").weights == {"B": -1.0, "C": 1.0}  # A cancels
    for bad, why in [("SI+FD", "sum to 0"), ("A - A", "sum to 0"), ("(A - B", "not closed"), ("A - B)", "unexpected"),
                     ("A -", "ends"), ("- A", "'-'")]:
        with pytest.raises(ValueError, match=why):
            parse_contrast(bad)


def test_per_seed_uses_the_seeds_every_method_ran():
    contrast = parse_contrast("(A - B) - (C - D)")
    values = {"A": {0: 5.0, 1: 6.0, 2: 7.0}, "B": {0: 1.0, 1: 1.0, 2: 2.0}, "C": {0: 3.0, 1: 3.0},
              "D": {0: 2.0, 1: 1.0, 3: 9.0}}
    assert per_seed(contrast, values) == {0: (5 - 1) - (3 - 2), 1: (6 - 1) - (3 - 1)}
    assert per_seed(contrast, {"A": {0: 1.0}}) == {}


def test_contrast_rows_against_hand_differences_scipy_and_holm(tmp_path):
    runs = read_records(write_records(tmp_path / "r.jsonl", skip={("cp", "kaiming+WD", 3)}))
    keys = ("family", "method", "rank")
    exprs = ["SI+FD - kaiming+WD", "(SI+FD - SI+WD) - (kaiming+FD - kaiming+WD)", "SI+FD - dense"]
    rows = contrast_rows(runs, keys, contrasts=exprs)
    assert [(r["family"], r["contrast"]) for r in rows] == [(f, " ".join(e.split())) for f in ("cp", "lowrank")
                                                           for e in exprs]
    p_values = []
    for row in rows:
        a = ACC[row["family"]]
        per_seed_values = {
            exprs[0]: [100 * (x - y) for x, y in zip(a["SI+FD"], a["kaiming+WD"])],
            exprs[1]: [100 * ((s - w) - (kf - kw)) for s, w, kf, kw in
                       zip(a["SI+FD"], a["SI+WD"], a["kaiming+FD"], a["kaiming+WD"])],
            exprs[2]: [100 * (x - d) for x, d in zip(a["SI+FD"], DENSE)],
        }[row["contrast"]]
        if row["family"] == "cp" and "kaiming+WD" in row["contrast"]:
            per_seed_values = per_seed_values[:3]  # cp's kaiming+WD lacks seed 3
        assert row["pairs"] == len(per_seed_values)
        assert row["diff_mean"] == pytest.approx(statistics.fmean(per_seed_values))
        t = scipy.stats.ttest_1samp(per_seed_values, 0.0)
        low, high = t.confidence_interval(0.95)
        assert row["p"] == pytest.approx(t.pvalue, rel=1e-9)
        assert (row["diff_low"], row["diff_high"]) == pytest.approx((low, high), rel=1e-9)
        assert row["p_perm"] == pytest.approx(sign_flip_p(per_seed_values))
        p_values.append(t.pvalue)
    assert [r["p_adj"] for r in rows] == pytest.approx(holm(p_values))  # one family: the whole table
    assert [r["resolved"] for r in rows] == [p < 0.05 for p in holm(p_values)]
    assert any(r["resolved"] for r in rows) and not all(r["resolved"] for r in rows)
    unadjusted = contrast_rows(runs, keys, contrasts=exprs, adjustment="none")
    assert [r["p_adj"] for r in unadjusted] == [r["p"] for r in unadjusted]
    with pytest.raises(ValueError, match="no row has method 'SI\\+XX'"):
        contrast_rows(runs, keys, contrasts=["SI+XX - kaiming+WD"])
    with pytest.raises(ValueError, match="needs method"):
        contrast_rows(runs, ("family", "rank"), contrasts=exprs[:1])


def test_paired_vs_is_the_shorthand_and_gets_p_values(tmp_path):
    runs = read_records(write_records(tmp_path / "r.jsonl"))
    keys = ("family", "method", "rank")
    rows = {(r["family"], r["method"]): r for r in aggregate(runs, keys, paired_vs="kaiming+WD")}
    table = {(r["family"], r["contrast"]): r for r in contrast_rows(runs, keys, paired_vs="kaiming+WD")}
    assert len(table) == 2 * 3  # SI+FD, SI+WD and kaiming+FD against kaiming+WD in both families; no dense row
    for (family, contrast), c in table.items():
        row = rows[family, contrast.split(" - ")[0]]
        assert (row["diff_mean"], row["p"], row["p_adj"], row["pairs"]) == (c["diff_mean"], c["p"], c["p_adj"], 4)
    assert rows["dense", "dense"]["p"] is None and rows["lowrank", "kaiming+WD"]["pairs"] == 0
    # an explicit contrast joins the family: more contrasts, larger adjusted p
    joined = {(r["family"], r["method"]): r for r in aggregate(runs, keys, paired_vs="kaiming+WD",
                                                                contrasts=["SI+FD - dense"])}
    assert joined["lowrank", "SI+FD"]["p_adj"] > rows["lowrank", "SI+FD"]["p_adj"]
    # ... but a contrast asked twice is one test
    again = {(r["family"], r["method"]): r for r in aggregate(runs, keys, paired_vs="kaiming+WD",
                                                               contrasts=["SI+FD - kaiming+WD"])}
    assert again["lowrank", "SI+FD"]["p_adj"] == rows["lowrank", "SI+FD"]["p_adj"]


def test_compare_prints_the_contrasts_table(tmp_path, capsys):
    records = write_records(tmp_path / "r.jsonl")
    assert main(["compare", str(records), "--by", "family,method,rank", "--contrast", "SI+FD - kaiming+WD",
                 "--contrast", "(SI+FD - SI+WD) - (kaiming+FD - kaiming+WD)", "--adjust", "bh",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    header = "| family | rank | contrast | n | mean diff | 95% CI | p | adj. p (bh) | perm. p | verdict |"
    assert header in out and "Benjamini–Hochberg over the m = 4 contrasts of this table" in out
    row = next(r for r in contrast_rows(read_records(records), ("family", "method", "rank"),
                                        contrasts=["SI+FD - kaiming+WD",
                                                   "(SI+FD - SI+WD) - (kaiming+FD - kaiming+WD)"], adjustment="bh")
               if r["family"] == "lowrank" and r["contrast"] == "SI+FD - kaiming+WD")
    line = (f"| lowrank | 0.1 | SI+FD - kaiming+WD | 4 | {row['diff_mean']:+.2f} | [{row['diff_low']:.2f}, "
            f"{row['diff_high']:.2f}] | {row['p']:.3g} | {row['p_adj']:.3g} | 0.125 | resolved |")
    assert line in out
    assert (tmp_path / "out" / "comparison_contrasts.csv").is_file()
    assert "\\toprule" in (tmp_path / "out" / "comparison_contrasts.tex").read_text()
    assert main(["compare", str(records), "--by", "family,method,rank", "--paired-vs", "kaiming+WD",
                 "--out", str(tmp_path / "out2")]) == 0
    out = capsys.readouterr().out
    assert "Δ vs kaiming+WD (95% CI) | pairs | p | adj. p |" in out and "| SI+FD - kaiming+WD |" in out


def test_a_number_scales_a_term_for_main_effects():
    main_effect = parse_contrast("0.5 * (SI+WD + SI+FD - kaiming+WD - kaiming+FD)")
    assert main_effect.weights == {"SI+WD": 0.5, "SI+FD": 0.5, "kaiming+WD": -0.5, "kaiming+FD": -0.5}
    assert parse_contrast("2 * SI+FD - 2 * kaiming+WD").weights == {"SI+FD": 2.0, "kaiming+WD": -2.0}
    with pytest.raises(ValueError, match="not a number"):
        parse_contrast("x * (A - B)")
    with pytest.raises(ValueError, match="sum to 0"):
        parse_contrast("0.5 * A - B")


def test_contrasts_over_families_pair_seeds_within_each_method(tmp_path):
    """``over="family"``: "cp - lowrank" per method, the per-seed differences of ACC by hand; a contrast
    over a key that is not a row key, and --paired-vs with contrasts over families, are refused."""
    runs = read_records(write_records(tmp_path / "r.jsonl"))
    keys = ("family", "method", "rank")
    rows = contrast_rows(runs, keys, contrasts=["cp - lowrank"], adjustment="none", over="family")
    assert {r["method"] for r in rows} == set(ACC["cp"])  # dense has no cp row: no contrast there
    for row in rows:
        diffs = [100 * (c - lo) for c, lo in zip(ACC["cp"][row["method"]], ACC["lowrank"][row["method"]])]
        assert row["diff_mean"] == pytest.approx(statistics.fmean(diffs))
        assert row["p"] == pytest.approx(scipy.stats.ttest_1samp(diffs, 0.0).pvalue)
    with pytest.raises(ValueError, match="needs seed among the row keys"):
        contrast_rows(runs, keys, contrasts=["cp - lowrank"], over="seed")
    with pytest.raises(ValueError, match="cannot be combined"):
        contrast_rows(runs, keys, paired_vs="kaiming+WD", over="family")
    with pytest.raises(ValueError, match="no row has family 'tt'"):
        contrast_rows(runs, keys, contrasts=["tt - lowrank"], over="family")


def test_where_selects_by_the_derived_method_label(tmp_path):
    from tdecomp.results import select_runs

    runs = read_records(write_records(tmp_path / "r.jsonl"))
    chosen = select_runs(runs, ["method=SI+FD"])
    assert {(r.config["family"], r.method) for r in chosen} == {("lowrank", "SI+FD"), ("cp", "SI+FD")}
    assert {r.method for r in select_runs(runs, ["method=dense"])} == {"dense"}
    assert len(select_runs(runs, ["method=SI+FD", "family=cp"])) == 4
    either = select_runs(runs, ["method=[SI+FD, kaiming+WD]", "family=[cp]"])
    assert sorted(r.method for r in either) == ["SI+FD"] * 4 + ["kaiming+WD"] * 4


def test_compressed_runs_pair_with_the_dense_source_whatever_their_allocation_and_distillation(tmp_path):
    """Allocation and distillation mean nothing for a dense run: ``X - dense`` pairs every compressed row
    (here allocation=energy, distill=4) with the dense row, and ``--where distill=4`` keeps dense."""
    from tdecomp.results import select_runs

    lines = [record("dense", "dense", s, a) for s, a in enumerate(DENSE)]
    for s, a in enumerate(ACC["lowrank"]["SI+FD"]):
        line = record("SI+FD", "lowrank", s, a)
        line["config"].update(allocation="energy", distill=4.0)
        lines.append(line)
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    runs = select_runs(read_records(path), ["distill=4"])
    rows = contrast_rows(runs, ("family", "method", "allocation", "rank", "distill"), contrasts=["SI+FD - dense"])
    assert [(r["allocation"], r["pairs"]) for r in rows] == [("energy", 4)]
    diffs = [100 * (x - d) for x, d in zip(ACC["lowrank"]["SI+FD"], DENSE)]
    assert rows[0]["diff_mean"] == pytest.approx(statistics.fmean(diffs))


def test_best_cell_per_group_against_every_other_cell_with_holm_over_the_table(tmp_path):
    """Two ranks of the ACC cells: at 0.1 every cell but lowrank SI+FD loses 10 pp (+ a little per seed),
    so lowrank SI+FD is the resolved best; at 0.05 cp's cells gain 12 pp (+ a little per seed) and cp
    SI+FD leads lowrank SI+FD by a margin 4 seeds cannot resolve. Adjusted p: Holm over all 14
    best-vs-other comparisons of both ranks, by hand with scipy."""
    from tdecomp.results import best_rows

    def acc(rank: float, family: str, method: str, seed: int, a: float) -> float:
        if rank == 0.1:
            return a if (family, method) == ("lowrank", "SI+FD") else a - 0.1 - 0.001 * seed
        return a + 0.12 + 0.0015 * seed if family == "cp" else a

    lines = [record("dense", "dense", s, a) for s, a in enumerate(DENSE)]  # dense never competes
    for rank in (0.1, 0.05):
        for f, methods in ACC.items():
            for m, accs in methods.items():
                for s, a in enumerate(accs):
                    line = record(m, f, s, acc(rank, f, m, s, a))
                    line["config"]["rank"] = rank
                    lines.append(line)
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = best_rows(read_records(path), ("family", "method", "rank"), ("family", "method"))
    assert [(r["rank"], r["best"], r["cells"]) for r in rows] == [("0.05", "cp × SI+FD", 8),
                                                                 ("0.1", "lowrank × SI+FD", 8)]
    p_values, gaps = [], {}
    for rank, best_cell in ((0.05, ("cp", "SI+FD")), (0.1, ("lowrank", "SI+FD"))):
        cells = {(f, m): [100 * acc(rank, f, m, s, a) for s, a in enumerate(accs)]
                 for f, methods in ACC.items() for m, accs in methods.items()}
        for cell, accs in cells.items():
            if cell != best_cell:
                diffs = [b - a for b, a in zip(cells[best_cell], accs)]
                p_values.append(scipy.stats.ttest_1samp(diffs, 0.0).pvalue)
                gaps.setdefault(str(rank), []).append((statistics.fmean(diffs), len(p_values) - 1))
    adjusted = holm(p_values)
    for row in rows:
        gap, index = min(gaps[row["rank"]])
        assert row["diff_mean"] == pytest.approx(gap) and row["p_adj"] == pytest.approx(adjusted[index])
        assert row["m"] == 14
        assert row["resolved"] == all(adjusted[i] < 0.05 and g > 0 for g, i in gaps[row["rank"]])
    assert rows[1]["resolved"] and not rows[0]["resolved"] and rows[0]["runner_up"] == "cp × SI+WD"
    with pytest.raises(ValueError, match="each must be one of the row keys"):
        best_rows(read_records(path), ("family", "method", "rank"), ("init",))
