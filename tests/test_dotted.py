"""The one dotted-key helper: config overrides, sweep axes and results row keys read and write through it."""

from __future__ import annotations

from tdecomp import dotted
from tdecomp.config import parse_overrides


def test_get_reads_a_plain_key_first_then_the_nested_path():
    values = {"model_kwargs": {"width": 2, "deep": {"k": 3}}, "a.b": "flat", "rank": 0.1}
    assert dotted.get(values, "model_kwargs.width") == 2 and dotted.get(values, "model_kwargs.deep.k") == 3
    assert dotted.get(values, "a.b") == "flat" and dotted.get(values, "rank") == 0.1
    assert dotted.get(values, "model_kwargs.depth") is None and dotted.get(values, "rank.x") is None


def test_put_creates_the_dicts_on_the_way_and_overrides_parse_through_it():
    values: dict = {"model_kwargs": {"width": 1}}
    dotted.put(values, "model_kwargs.depth", 20)
    dotted.put(values, "data_kwargs.n.m", "x")
    dotted.put(values, "epochs", 3)
    assert values == {"model_kwargs": {"width": 1, "depth": 20}, "data_kwargs": {"n": {"m": "x"}}, "epochs": 3}
    assert parse_overrides(["model_kwargs.width=2", "model_kwargs.depth=3", "lr=0.1"]) == {
        "model_kwargs": {"width": 2, "depth": 3}, "lr": 0.1}
