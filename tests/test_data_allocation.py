"""The allocation rules that read calibration data: whitened-energy (the energy of the output, W·L) and
fisher (Fisher-weighted energy in absolute units, one threshold for all layers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdecomp
from tdecomp.allocation import get_allocation, loss_threshold
from tests.helpers import FAMILIES

F64 = torch.float64


class Muted(nn.Module):
    """Three convs and a classifier; the middle conv's output is multiplied by 0 before it is used."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = h + 0.0 * self.b(h)  # b reaches the loss, with zero gradient
        return self.fc(torch.relu(self.c(h)).mean((2, 3)))


@pytest.mark.parametrize("family", FAMILIES)
def test_fisher_gives_a_layer_the_loss_cannot_see_the_minimum_rank(family):
    model = Muted().double()
    batches = [(torch.randn(6, 3, 6, 6, dtype=F64), torch.randint(0, 5, (6,))) for _ in range(3)]
    stats = tdecomp.calibrate(model, batches, loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]))
    assert float(stats["b"].fisher.abs().sum()) == 0 and float(stats["c"].fisher.abs().sum()) > 0
    tdecomp.factorize_model(model, family, 0.3, skip=("fc",), progress=False, allocation="fisher", calibration=stats)
    smallest = tdecomp.get_family(family)._ranks_at_scale(model.b.spec, 0.0)  # the family's ranks at rank scale 0
    assert model.b.rank == smallest
    assert model.c.rank != smallest  # its twin, which the loss sees, gets the budget


def test_fisher_threshold_spans_every_scale_and_decreases():
    ts = [i / 100 for i in range(101)]
    values = [loss_threshold(t) for t in ts]
    assert values[0] == float("inf") and values[-1] == 0.0 and loss_threshold(0.5) == 1.0
    assert all(a > b for a, b in zip(values[1:-1], values[2:-1]))
    assert loss_threshold(0.01) > 1e40 and loss_threshold(0.99) < 1e-40


def test_fisher_rule_discards_at_most_the_threshold_of_fisher_weighted_energy():
    torch.manual_seed(0)
    layer = nn.Linear(12, 9).double()
    spec = tdecomp.DenseSpec.from_module(layer)
    fisher = torch.rand(9, 12, dtype=F64) * torch.logspace(-3, 0, 9, dtype=F64)[:, None]
    stats = tdecomp.layers.whitening.LayerStats(spec, torch.eye(12, dtype=F64), 1, fisher=fisher)
    ranks_at = get_allocation("fisher")(tdecomp.get_family("lowrank"), spec, layer.weight.detach(), {}, stats)
    weighted = fisher.sum(1).sqrt()[:, None] * layer.weight.detach()  # rows by √(Σ_row Fisher), written out
    s2 = torch.linalg.svdvals(weighted).square()
    for t in (0.3, 0.45, 0.5, 0.55, 0.7):
        (r,) = ranks_at(t)
        discarded = [float(s2[k:].sum()) for k in range(len(s2) + 1)]
        assert discarded[r] <= loss_threshold(t) * (1 + 1e-12) and (r == 1 or discarded[r - 1] > loss_threshold(t))


@pytest.mark.parametrize("family", ["lowrank", "tucker"])
def test_whitened_energy_keeps_the_same_fraction_of_output_energy(family):
    torch.manual_seed(0)
    layer = nn.Linear(10, 8).double()
    x = torch.randn(50, 10, dtype=F64) * torch.logspace(-1, 1, 10, dtype=F64)
    (stats,) = tdecomp.calibrate(layer, [x], layers=[""]).values()
    cls, spec = tdecomp.get_family(family), tdecomp.DenseSpec.from_module(layer)
    ranks_at = get_allocation("whitened-energy")(cls, spec, layer.weight.detach(), {}, stats)
    c = x.T @ x / 50
    m = c.diagonal().mean()
    root = torch.linalg.cholesky((c + 1e-2 * m * torch.eye(10, dtype=F64)) / (1.01 * m))
    s2 = torch.linalg.svdvals(layer.weight.detach() @ root).square()  # the damped output's spectrum
    kept = s2.cumsum(0) / s2.sum()
    for t in (0.5, 0.8, 0.95, 0.99):
        expected = int((kept < t).sum()) + 1
        got = ranks_at(t)
        assert got[0] == expected and (family == "lowrank" or got[1] == min(expected, 10))
