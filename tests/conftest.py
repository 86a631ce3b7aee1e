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
    # size-1 kernel axes get no factor; their stride and padding are applied up front
    "conv1x1_s2": (lambda: nn.Conv2d(6, 8, 1, stride=2), (2, 6, 7, 6)),
    "conv1x5_s21_p12": (lambda: nn.Conv2d(6, 8, (1, 5), stride=(2, 1), padding=(1, 2)), (2, 6, 5, 9)),
    "conv1d_k3_s1_p1": (lambda: nn.Conv1d(6, 8, 3, padding=1), (2, 6, 11)),
    "conv1d_k5_s2": (lambda: nn.Conv1d(6, 8, 5, stride=2), (2, 6, 12)),
    "conv1d_k4_same": (lambda: nn.Conv1d(5, 7, 4, padding="same", bias=False), (2, 5, 10)),
    "conv1d_k3_d2_p2": (lambda: nn.Conv1d(6, 8, 3, dilation=2, padding=2), (2, 6, 11)),
    "conv1d_k1": (lambda: nn.Conv1d(6, 8, 1), (2, 6, 9)),
    "conv1d_k3_reflect": (lambda: nn.Conv1d(5, 7, 3, padding=2, padding_mode="reflect"), (2, 5, 10)),
    "conv3d_k3_p1": (lambda: nn.Conv3d(4, 5, 3, padding=1), (2, 4, 5, 4, 6)),
    "conv3d_k132_s212": (
        lambda: nn.Conv3d(4, 5, (1, 3, 2), stride=(2, 1, 2), padding=(1, 1, 0), bias=False),
        (2, 4, 5, 6, 7),
    ),
}


def matricize(w: torch.Tensor) -> torch.Tensor:
    """Oracle for the matricization every family's spectra use, written out per kernel order.

    Size-1 kernel axes are dropped first; then (c_out·k_h) × (c_in·k_w) for a 2-D kernel,
    c_out × (c_in·k) for 1-D, (c_out·k_d) × (c_in·k_h·k_w) for 3-D, c_out × c_in without kernel.
    """
    o, i, *kernel = w.shape
    kernel = [k for k in kernel if k > 1]
    w = w.reshape(o, i, *kernel)
    if len(kernel) == 0:
        return w
    if len(kernel) == 1:
        return w.reshape(o, i * kernel[0])
    if len(kernel) == 2:
        return torch.einsum("oihw->ohiw", w).reshape(o * kernel[0], i * kernel[1])
    return torch.einsum("oidhw->odihw", w).reshape(o * kernel[0], i * kernel[1] * kernel[2])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_dense(case: str) -> tuple[nn.Module, torch.Tensor]:
    """A float64 dense layer and a matching input for ``case``."""
    build, shape = DENSE_CASES[case]
    module = build().double()
    return module, torch.randn(shape, dtype=torch.float64)
