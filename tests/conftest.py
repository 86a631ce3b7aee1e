"""Shared fixtures: the dense layers every family must reproduce, and deterministic seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

FAMILIES = ("lowrank", "cp", "tucker", "tt")

# name -> (constructor, input shape); float64 so that equality checks are tight
DENSE_CASES = {
    "linear": (lambda: nn.Linear(12, 10), (3, 12)),
    "linear_nobias_3d": (lambda: nn.Linear(9, 7, bias=False), (2, 4, 9)),
    "conv3x3_s1_p1": (lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 9, 8)),
    "conv3x3_s2_p1": (lambda: nn.Conv2d(6, 8, 3, stride=2, padding=1), (2, 6, 9, 8)),
    "conv3x3_same": (lambda: nn.Conv2d(6, 8, 3, padding="same"), (2, 6, 9, 8)),
    "conv1x1": (lambda: nn.Conv2d(6, 8, 1), (2, 6, 5, 5)),
    "conv5x5_d2": (lambda: nn.Conv2d(6, 8, 5, dilation=2, padding=2), (2, 6, 11, 10)),
    "conv4x4_same_even": (lambda: nn.Conv2d(5, 7, 4, padding="same", bias=False), (2, 5, 8, 9)),
    "conv3x2_s21_reflect": (
        lambda: nn.Conv2d(5, 7, (3, 2), stride=(2, 1), padding=(1, 2), padding_mode="reflect"),
        (2, 5, 9, 8),
    ),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_dense(case: str) -> tuple[nn.Module, torch.Tensor]:
    """A float64 dense layer and a matching input for ``case``."""
    build, shape = DENSE_CASES[case]
    module = build().double()
    return module, torch.randn(shape, dtype=torch.float64)
