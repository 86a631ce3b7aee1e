"""The main job, shrunk: `tdecomp demo` trains every family and writes its table and figure."""

from __future__ import annotations

import csv

from PIL import Image

from tdecomp.cli import main
from tests.helpers import FAMILIES


def test_demo_writes_table_csv_and_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seeds", "1", "--epochs", "1"]) == 0
    table = capsys.readouterr().out
    families = FAMILIES  # every registered family, the test-registered tensor ring included
    for family in ("dense", *families):
        assert f"| {family} |" in table
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["family"], r["method"]) for r in rows} == {("dense", "dense")} | {
        (f, m) for f in families for m in ("SI+FD", "random+WD")}
    image = Image.open(out / "accuracy_vs_params.png")
    assert image.size[0] > 300 and len(set(image.convert("L").getdata())) > 10  # not blank
    assert main(["demo", "--out", str(out), "--seeds", "1", "--epochs", "1"]) == 0  # finished runs are reused
