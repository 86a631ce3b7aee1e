"""Deterministic seeding for every test (shared helpers live in tests/helpers.py), and a clear stop
when the checkout is not installed: its analysis/ and experiments/ are importable only as
``tdecomp.analysis``/``tdecomp.experiments``, which the install maps (pyproject's package-dir)."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def pytest_sessionstart(session: pytest.Session) -> None:
    if importlib.util.find_spec("tdecomp.analysis") is None or importlib.util.find_spec("tdecomp.experiments") is None:
        pytest.exit("tdecomp.analysis/tdecomp.experiments are not importable: install this checkout first "
                    "(python -m pip install -e \".[test]\"), which maps analysis/ and experiments/ into tdecomp",
                    returncode=4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
