"""YAML as configs and command-line values are read: YAML 1.1 (PyYAML's safe loader) with the YAML 1.2
float rule, so that ``1e-6``, ``5E-4`` and ``1e+3`` are numbers (PyYAML reads a float without a dot
as a string, and ``fd_coef=1e-6`` would be refused as text). Every config file, ``key=value``
override, sweep axis and ``--where`` value goes through :func:`load`."""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus the YAML 1.2 float pattern (exponents without a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    """The value of a YAML document (``yaml.safe_load`` with ``1e-6`` read as a float)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 — a SafeLoader subclass
