"""Dotted keys into nested dicts: ``model_kwargs.width`` names ``values["model_kwargs"]["width"]``.

The one reader and writer of dotted keys for config overrides (:func:`tdecomp.config.parse_overrides`),
sweep axes (:mod:`tdecomp.experiments.sweep`) and results row keys (:mod:`tdecomp.results`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def get(values: Mapping[str, Any], key: str) -> Any:
    """``values[key]`` if ``key`` is a key of ``values`` itself, else the value the dotted path reaches
    (``None`` where it leaves the nested dicts)."""
    if key in values:
        return values[key]
    node: Any = values
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def put(values: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` of ``values`` to ``value``, creating the intermediate dicts."""
    *parents, leaf = key.split(".")
    for part in parents:
        values = values.setdefault(part, {})
    values[leaf] = value
