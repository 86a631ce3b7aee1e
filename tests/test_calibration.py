"""Calibration statistics (tdecomp.calibrate): patches against the layers' own convolutions, accumulation
over batches against one concatenated batch, one batch of patches at a time, the input moment of an
input space against the patches themselves, the documented damping, and the Fisher information
against gradients written out."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdecomp
import tdecomp.calibration as calibration
from tdecomp.layers.whitening import DAMPING, LayerStats, input_moment
from tests.helpers import DENSE_CASES, TinyCNN1d, make_dense

F64 = torch.float64


def _patches_by_conv(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Oracle: the layer's own conv (padding mode, stride, dilation) with one output channel per patch
    entry (a one-hot weight), so its output at each position is the patch there: (N·positions, d)."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features)
    d = module.weight[0].numel()
    probe = copy.deepcopy(module)
    probe.bias = None
    probe.out_channels = d
    probe.weight = nn.Parameter(torch.eye(d, dtype=x.dtype).reshape(d, *module.weight.shape[1:]))
    out = probe(x)  # (N, d, *positions)
    return out.movedim(1, -1).reshape(-1, d)


@pytest.mark.parametrize("case", sorted(DENSE_CASES))
def test_patches_are_what_the_layer_multiplies(case):
    module, x = make_dense(case)
    spec = tdecomp.DenseSpec.from_module(module)
    got = calibration.patches(x, spec)
    torch.testing.assert_close(got, _patches_by_conv(module, x), rtol=0, atol=1e-12)
    if isinstance(module, nn.Conv2d) and spec.padding_mode == "zeros" and not isinstance(spec.padding, str):
        unfolded = F.unfold(x, spec.kernel_size, spec.dilation, spec.padding, spec.stride)  # (N, d, L)
        torch.testing.assert_close(got, unfolded.transpose(1, 2).reshape(-1, unfolded.shape[1]), rtol=0, atol=0)
    # and the dense output is the weight times them
    out = module(x) if module.bias is None else module(x) - spec.bias_view(module.bias)
    rows = got @ module.weight.reshape(spec.out_channels, -1).T
    out = out.movedim(1, -1) if spec.is_conv else out
    torch.testing.assert_close(rows, out.reshape(rows.shape))


def _batches() -> list[torch.Tensor]:
    return [torch.randn(n, 1, 30, dtype=F64) for n in (5, 2, 7)]  # unequal sizes: a mean of means would differ


def test_accumulation_over_batches_equals_the_concatenated_batch():
    model = TinyCNN1d().double()
    batches = _batches()
    split = tdecomp.calibrate(model, batches)
    whole = tdecomp.calibrate(model, [torch.cat(batches)])
    assert set(split) == set(whole) == {"features.0", "features.2", "features.5", "features.7", "fc"}
    for name in whole:
        assert split[name].count == whole[name].count
        torch.testing.assert_close(split[name].second_moment, whole[name].second_moment, rtol=1e-12, atol=1e-12)
    # counts: rows of the input (Linear) or N × output positions (convs)
    assert whole["fc"].count == 14 and whole["features.0"].count == 14 * 30 and whole["features.2"].count == 14 * 15
    # the statistic of what the layer sees: Σ x xᵀ of the patches of its inputs in the dense model
    seen = []
    handle = model.features[2].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.eval()(torch.cat(batches))
    handle.remove()
    patches = _patches_by_conv(model.features[2], seen[0])
    torch.testing.assert_close(whole["features.2"].gram, patches.T @ patches)


def test_one_batch_of_patches_at_a_time(monkeypatch):
    model = TinyCNN1d().double()
    batches = _batches()
    made, added = [], []
    real_patches, real_add = calibration.patches, LayerStats.add
    monkeypatch.setattr(calibration, "patches",
                        lambda x, spec: made.append((spec, x.shape[0])) or real_patches(x, spec))
    monkeypatch.setattr(LayerStats, "add", lambda self, rows: added.append(rows.shape[0]) or real_add(self, rows))
    stats = tdecomp.calibrate(model, batches)
    assert len(made) == len(added) == len(stats) * len(batches)  # one patch matrix per layer and batch
    positions = {id(s.spec): s.count // 14 for s in stats.values()}  # per example: 30, 15, 15, 15, 1
    for (spec, n), rows in zip(made, added):
        assert n in (5, 2, 7) and rows == n * positions[id(spec)]  # that batch's patches, never more


def test_calibration_restores_modes_removes_hooks_and_takes_any_dtype_and_batch_format():
    model = TinyCNN1d().double().train()
    model.features[3].eval()  # a module in its own mode stays so
    y = torch.zeros(3, dtype=torch.long)
    for batches in ([torch.randn(3, 1, 30)], [(torch.randn(3, 1, 30), y)], [{"x": torch.randn(3, 1, 30)}]):
        forward = (lambda m, b: m(b["x"])) if isinstance(batches[0], dict) else None
        stats = tdecomp.calibrate(model, batches, forward=forward)
        assert stats["fc"].gram.dtype == F64 and stats["fc"].count == 3
    assert model.training and not model.features[3].training
    assert all(not m._forward_pre_hooks for m in model.modules())
    chosen = tdecomp.calibrate(model, [torch.randn(2, 1, 30)], layers=["features.5"], max_batches=1)
    assert list(chosen) == ["features.5"]
    with pytest.raises(ValueError, match="'features.9'.*not a module"):
        tdecomp.calibrate(model, [torch.randn(2, 1, 30)], layers=["features.9"])


def test_the_input_moment_averages_the_offsets_outside_the_input_space():
    conv = nn.Conv2d(3, 4, (2, 3), padding=1).double()
    x = torch.randn(5, 3, 6, 7, dtype=F64)
    spec = tdecomp.DenseSpec.from_module(conv)
    (stats,) = tdecomp.calibrate(conv, [x], layers=[""]).values()
    patches = _patches_by_conv(conv, x).reshape(-1, 3, 2, 3)  # (samples, c_in, k_h, k_w)
    # c_in: every offset (h, w) is one more sample of the c_in vector
    per_offset = patches.permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(input_moment(stats.second_moment, spec, (1,)),
                               per_offset.T @ per_offset / len(per_offset))
    # c_in and k_w (low rank's columns): every row offset h is one more sample of the (c_in, k_w) vector
    per_row = patches.permute(0, 2, 1, 3).reshape(-1, 3 * 3)
    torch.testing.assert_close(input_moment(stats.second_moment, spec, (1, 3)), per_row.T @ per_row / len(per_row))
    # all axes: the second moment itself
    flat = patches.reshape(-1, 18)
    torch.testing.assert_close(input_moment(stats.second_moment, spec, (1, 2, 3)), flat.T @ flat / len(flat))


def test_whitening_is_the_documented_damping_and_survives_rank_deficiency():
    assert DAMPING == 1e-2
    layer = nn.Linear(6, 2).double()
    x = torch.randn(4, 6, dtype=F64)  # 4 samples of 6 features: C has rank 4
    x[:, 5] = 0  # and a dead input
    (stats,) = tdecomp.calibrate(layer, [x], layers=[""]).values()
    c, m = x.T @ x / 4, float((x.T @ x / 4).diagonal().mean())
    root = stats.whitening((1,))  # damped by 1e-2 of the mean diagonal, then divided by the damped mean diagonal
    torch.testing.assert_close(root @ root.T, (c + 1e-2 * m * torch.eye(6, dtype=F64)) / (1.01 * m))
    assert torch.equal(root, root.tril())
    stats.damping = 0.0
    with pytest.raises(ValueError, match="singular at damping=0.0"):
        stats.whitening((1,))
    silent = LayerStats(stats.spec, torch.zeros(6, 6, dtype=F64), 3)
    assert torch.equal(silent.whitening((1,)), torch.eye(6, dtype=F64))  # nothing seen: plain SI


def test_fisher_information_is_the_sum_of_squared_batch_gradients():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    batches = [(torch.randn(n, 4, dtype=F64), torch.randn(n, 2, dtype=F64)) for n in (3, 5)]
    model[0].weight.requires_grad_(False)  # frozen weights are measured too, and stay frozen

    def loss_fn(m, batch):
        return (m(batch[0]) - batch[1]).square().mean()

    fisher = tdecomp.fisher_information(model, batches, loss_fn)
    expected = {"0": torch.zeros(3, 4, dtype=F64), "2": torch.zeros(2, 3, dtype=F64)}
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    for x, y in batches:  # the gradients of the mean squared error, by hand
        h = torch.tanh(x @ w1.T + b1)
        g_out = 2 * (h @ w2.T + b2 - y) / y.numel()
        g_h = (g_out @ w2) * (1 - h.square())
        expected["2"] += (g_out.T @ h).square()
        expected["0"] += (g_h.T @ x).square()
    for name in expected:
        torch.testing.assert_close(fisher[name], expected[name])
    assert not model[0].weight.requires_grad and all(p.grad is None for p in model.parameters())
    stats = tdecomp.calibrate(model, batches, loss_fn=loss_fn)
    torch.testing.assert_close(stats["0"].fisher, expected["0"])
