"""Docs tables regenerated from committed records: every ``tdecomp-table`` block of README.md and
docs/*.md equals what its compare command prints from its records file (and its figure can be drawn),
and the check fails when a table is edited by hand or a figure is missing."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tdecomp.cli import main
from tdecomp.commands.docs_tables import BLOCK, doc_files, process

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_docs_match_their_committed_records():
    """Trivially true while no doc has a block yet; each table that moves to records adds one."""
    for path in doc_files(ROOT):
        for match in BLOCK.finditer(path.read_text()):
            words = shlex.split(match["command"])
            if words[0] == "plot":  # run folders up to the first option
                sources = words[1:next(i for i, w in enumerate(words) if w.startswith("--"))]
            else:
                sources = [w for w in words[1:] if w.endswith(".jsonl")]
            assert sources and all(s.startswith("docs/data/") for s in sources), (path, match["command"])
        assert process(path, ROOT, check=True) == []


def tiny_records(path: Path) -> Path:
    lines = []
    for seed, (a, b) in enumerate([(0.90, 0.85), (0.92, 0.86), (0.91, 0.88)]):
        for method, acc, init, reg in (("SI+FD", a, "spectral", "fd"), ("kaiming+WD", b, "kaiming-factors", "wd")):
            lines.append({"run": f"lowrank_{method}_seed-{seed}",
                          "config": {"family": "lowrank", "rank": 0.1, "seed": seed, "init": init, "reg": reg},
                          "summary": {"test_acc": acc, "params": 50, "param_ratio": 0.1, "time_s": 2.0},
                          "curve": {"epoch": [1, 2], "train_loss": [0.9, 0.4], "test_acc": [acc - 0.1, acc]}})
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


COMMAND = ('compare docs/data/tiny.jsonl --by family,method,rank --pivot rank --contrast "SI+FD - kaiming+WD" '
           "--tables pivot,contrasts")


def test_blocks_are_rebuilt_from_records_and_a_hand_edit_fails_the_check(tmp_path, capsys):
    tiny_records(tmp_path / "docs" / "data" / "tiny.jsonl")
    doc = tmp_path / "docs" / "results.md"
    doc.write_text(f"# Results\n\nClaim first.\n\n<!-- tdecomp-table: {COMMAND} -->\n(stale)\n"
                   "<!-- /tdecomp-table -->\n\nAfter.\n")
    assert main(["docs-tables", "--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\nClaim first.\n\n<!-- tdecomp-table: ") and text.endswith(
        "<!-- /tdecomp-table -->\n\nAfter.\n")
    assert "| lowrank | SI+FD | 91.00 ± " in text and "| lowrank | 0.1 | SI+FD - kaiming+WD | 3 | +4.67 |" in text
    assert "(stale)" not in text and "| family | method | rank | test acc (%) |" not in text  # long table not asked
    capsys.readouterr()
    assert main(["docs-tables", "--check", "--root", str(tmp_path)]) == 0
    assert "checked 1 blocks in 1 files: 0 problems" in capsys.readouterr().out
    assert main(["docs-tables", "--root", str(tmp_path)]) == 0 and doc.read_text() == text  # idempotent
    doc.write_text(text.replace("+4.67", "+4.76"))
    assert main(["docs-tables", "--check", "--root", str(tmp_path)]) == 1
    assert "results.md:5: the table differs from what its records give" in capsys.readouterr().out
    assert doc.read_text() == text.replace("+4.67", "+4.76")  # --check changes nothing


def test_figure_blocks_are_drawn_and_checked_for_presence(tmp_path, capsys):
    tiny_records(tmp_path / "docs" / "data" / "tiny.jsonl")
    doc = tmp_path / "docs" / "figures.md"
    command = "compare docs/data/tiny.jsonl --by family,method --curves --figure docs/figures/curves.png --tables long"
    doc.write_text(f"<!-- tdecomp-table: {command} -->\n<!-- /tdecomp-table -->\n")
    figure = tmp_path / "docs" / "figures" / "curves.png"
    assert main(["docs-tables", "--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "figure docs/figures/curves.png is missing" in out and not figure.exists()
    assert main(["docs-tables", "--root", str(tmp_path)]) == 0 and figure.stat().st_size > 10_000
    assert main(["docs-tables", "--check", "--root", str(tmp_path)]) == 0
    doc.write_text("<!-- tdecomp-table: compare docs/data/missing.jsonl -->\n<!-- /tdecomp-table -->\n"
                   "<!-- tdecomp-table: sweep x -->\n<!-- /tdecomp-table -->\n")
    assert main(["docs-tables", "--check", "--root", str(tmp_path), str(doc)]) == 1
    out = capsys.readouterr().out
    assert "figures.md:1: no finished run" in out and "figures.md:3: a tdecomp-table block runs compare or plot" in out


DYNAMICS_RUNS = ROOT / "docs" / "data" / "dynamics_digits"


def test_dynamics_table_against_the_records_read_by_hand():
    """The committed digits dynamics runs: √Σ‖W‖² and the mean stable rank at step 0 and the last
    record, and the final test accuracy, computed here straight from the JSON lines."""
    import math

    from tdecomp.analysis.dynamics_table import dynamics_table
    from tdecomp.analysis.plots import load_runs

    def cell(prefix: str, column: int) -> str:
        row = next(line for line in table.splitlines() if line.startswith(prefix))
        return [c.strip() for c in row.strip("|").split("|")][2 + column]

    names = ("dense", "fd", "wd")
    table = dynamics_table(load_runs([DYNAMICS_RUNS / n for n in names]), steps=[170])
    layers = ["features.3", "features.6", "features.9", "features.12"]
    for column, name in enumerate(names):
        records = [json.loads(x) for x in (DYNAMICS_RUNS / name / "dynamics.jsonl").read_text().splitlines()]
        for record in (records[0], records[-1]):
            entries = [record["layers"][n] for n in layers]
            norm = math.sqrt(sum(e["norm"] ** 2 for e in entries))
            stable = sum(e["stable_rank"] for e in entries) / len(entries)
            assert cell(f"| √Σ‖W‖²_F | {record['step']} |", column) == format(norm, ".3g")
            assert cell(f"| mean stable rank | {record['step']} |", column) == format(stable, ".3g")
        metrics = [json.loads(x) for x in (DYNAMICS_RUNS / name / "metrics.jsonl").read_text().splitlines()]
        assert cell("| final test acc (%) |", column) == f"{100 * metrics[-1]['test_acc']:.2f}"
    assert "| mean balancedness | 0 | — |" in table  # dense has no factors


def test_plot_blocks_rebuild_the_dynamics_table_and_figures(tmp_path, capsys):
    import shutil

    for name in ("dense", "fd"):
        shutil.copytree(DYNAMICS_RUNS / name, tmp_path / "docs" / "data" / "dyn" / name)
    command = "plot docs/data/dyn/dense docs/data/dyn/fd --out docs/figures/dyn --table --steps 170"
    doc = tmp_path / "docs" / "dynamics.md"
    doc.write_text(f"<!-- tdecomp-table: {command} -->\n<!-- /tdecomp-table -->\n")
    assert main(["docs-tables", "--check", "--root", str(tmp_path)]) == 1
    assert main(["docs-tables", "--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "| quantity | step | dense | lowrank SI+FD |" in text and "| mean η/‖W‖²_F | 170 |" in text
    assert (tmp_path / "docs" / "figures" / "dyn" / "effective_step.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["docs-tables", "--check", "--root", str(tmp_path)]) == 0
    doc.write_text(text.replace("| final test acc (%) | last | ", "| final test acc (%) | last | 9"))
    assert main(["docs-tables", "--check", "--root", str(tmp_path)]) == 1
    assert "dynamics.md:1: the table differs" in capsys.readouterr().out
    doc.write_text("<!-- tdecomp-table: plot docs/data/dyn/fd --out docs/figures/dyn -->\n<!-- /tdecomp-table -->\n")
    assert main(["docs-tables", "--check", "--root", str(tmp_path)]) == 1
    assert "needs --out (the figures' folder) and --table" in capsys.readouterr().out
