"""The main job, shrunk: `tdecomp demo` trains every family and writes its table and figure."""

from __future__ import annotations

import csv

import yaml
from PIL import Image

from tdecomp.cli import main
from tdecomp.commands.demo import DEMO_CONFIG
from tdecomp.commands.paths import default_config
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
    assert (out / "records.jsonl").is_file() and (out / "learning_curves.png").is_file()


def test_the_demo_is_a_packaged_sweep_with_the_digits_recipe_and_the_registered_families():
    demo = yaml.safe_load(default_config(DEMO_CONFIG).read_text())
    sweep = demo.pop("sweep")
    assert demo == yaml.safe_load(default_config("digits").read_text())  # one recipe
    assert sweep == {"family": "all", "method": ["dense", "SI+FD", "random+WD"], "seed": [0, 1, 2]}
