"""Shared test helpers: the family list, the dense layers every family must reproduce, small
models for surgery, and relative-error assertions with readable failures (as in tensorly.testing).

``FAMILIES`` comes from the registry after importing the test-only tensor-ring family, so every
family-parametrized test also proves that a new family is one file plus one import.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tdecomp.layers import available_families
from tests import tensor_ring  # noqa: F401  (registers "tensor_ring")

FAMILIES = available_families()

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


def make_dense(case: str) -> tuple[nn.Module, torch.Tensor]:
    """A float64 dense layer and a matching input for ``case``."""
    build, shape = DENSE_CASES[case]
    module = build().double()
    return module, torch.randn(shape, dtype=torch.float64)


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """‖actual − expected‖_F / ‖expected‖_F (absolute error when ``expected`` is zero)."""
    diff = (actual - expected).norm()
    scale = expected.norm()
    return float(diff / scale) if scale > 0 else float(diff)


def assert_rel_close(actual: Tensor, expected: Tensor, tol: float, what: str = "tensor") -> None:
    """Assert same shape and relative Frobenius error below ``tol``."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = relative_error(actual.detach(), expected.detach())
    assert err < tol, f"{what}: relative error {err:.3e} ≥ {tol:.1e}"


@torch.no_grad()
def hosvd_error(tensor: Tensor, ranks: tuple[int, ...]) -> float:
    """Relative error of the truncated HOSVD (leading left singular vectors of each unfolding)."""
    factors = []
    for mode, r in enumerate(ranks):
        unfolding = tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)
        factors.append(torch.linalg.svd(unfolding, full_matrices=False)[0][:, :r])
    approx = tensor
    for mode, u in enumerate(factors):  # project every mode onto its subspace: X ×_k U_k U_kᵀ
        approx = torch.tensordot(u @ u.T, approx.movedim(mode, 0), dims=([1], [0])).movedim(0, mode)
    return relative_error(approx, tensor)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.layers = nn.Sequential(
            Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2)
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(torch.relu(self.bn(self.stem(x))))
        return self.fc(out.mean((2, 3)))


class TinyTransformerMLP(nn.Module):
    """Pre-norm residual MLP blocks (the feed-forward half of a Transformer) and a head."""

    def __init__(self, d: int = 64, hidden: int = 256, depth: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(16, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
            for _ in range(depth)
        )
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


class TinyCNN1d(nn.Module):
    """A 1-D CNN on (N, 1, L) signals (MNIST-1D-like): stem, strided, 'same' and 1-tap convs, classifier."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
            nn.Conv1d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm1d(2 * width), nn.ReLU(),
            nn.Conv1d(2 * width, 2 * width, 5, padding="same", padding_mode="circular"), nn.ReLU(),
            nn.Conv1d(2 * width, 2 * width, 1),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(-1))


def prefer_reconstructed(monkeypatch) -> list[str]:
    """Drive the measured implementation choice (CUDA's) on the CPU with a timer that times
    'reconstructed' as faster; returns the list of timings taken (one entry per timed path)."""
    from tdecomp.layers import choice

    timed: list[str] = []

    def timer(run):
        run()
        timed.append("timed")
        return len(timed) % 2 * 1.0  # each pair: factorized (timed first) 1 s, reconstructed 0 s

    monkeypatch.setattr(choice, "TIMER", timer)
    monkeypatch.setattr(choice, "MEASURED_DEVICES", frozenset({"cpu"}))
    return timed
