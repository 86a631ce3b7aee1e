"""DynamicsTracker and NormMatching against brute force on materialized weights, and in training."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tdecomp
from tdecomp.analysis.dynamics import DYNAMICS, DynamicsTracker, read_dynamics
from tdecomp.analysis.norm_matching import NormMatching, interpolate
from tdecomp.config import load_config
from tdecomp.train import Callback, train
from tests import tensor_ring  # noqa: F401  (registers "tensor_ring": its tracker quantities use the fallbacks)

LR, WD, FD, MOMENTUM = 0.05, 3e-3, 2e-3, 0.9


class Zoo(nn.Module):
    """One layer per family (conv and Linear, overcomplete low-rank) plus dense conv and Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.dense_conv = nn.Conv2d(3, 6, 3, padding=1)
        self.lowrank = tdecomp.factorize(nn.Conv2d(6, 8, 3, padding=1), "lowrank", 0.4, init="random")
        self.over = tdecomp.factorize(nn.Linear(8, 7), "lowrank", 3.0, init="random")
        self.cp = tdecomp.factorize(nn.Conv2d(6, 8, (3, 2), padding=1), "cp", 0.5, init="random")
        self.tucker = tdecomp.factorize(nn.Conv2d(6, 8, 3), "tucker", 0.5, init="random")
        self.tt = tdecomp.factorize(nn.Linear(8, 9), "tt", 0.6, init="random")
        self.ring = tdecomp.factorize(nn.Conv2d(6, 8, 3, padding=1), "tensor_ring", 2, init="random")  # fallbacks
        self.head = nn.Linear(9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.dense_conv(x))
        z = self.lowrank(z)[:, :6] + self.cp(z)[:, :6, :-1, :-1].sum() * 1e-2 + self.tucker(z).mean()
        z = z + self.ring(z)[:, :6]
        v = self.over(z.mean((2, 3)).repeat(1, 2)[:, :8])
        return self.head(self.tt(torch.cat([v, z.mean((1, 2, 3))[:, None]], 1)[:, :8]))


def _matrix(w: torch.Tensor) -> torch.Tensor:
    if w.ndim == 2:
        return w
    o, i, kh, kw = w.shape
    return torch.einsum("oihw->ohiw", w).reshape(o * kh, i * kw)


def _weights64(model: Zoo) -> dict[str, torch.Tensor]:
    """Every tracked weight materialized in float64 (brute force, independent of the tracker)."""
    out = {}
    for name, m in model.named_children():
        if isinstance(m, tdecomp.FactorizedLayer):
            out[name] = copy.deepcopy(m).double().reconstruct().detach()
        else:
            out[name] = m.weight.detach().double().clone()
    return out


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """arccos of the cosine, from the difference (no cancellation): 2·arcsin(‖â − b̂‖/2)."""
    return float(2 * torch.arcsin((a / a.norm() - b / b.norm()).norm() / 2))


def _train(model: Zoo, tracker: DynamicsTracker, opt, steps: int, hook=None) -> None:
    torch.manual_seed(3)
    x, y = torch.randn(16, 3, 6, 6), torch.randint(0, 4, (16,))
    for step in range(1, steps + 1):
        opt.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + 0.5 * FD * tdecomp.frobenius_decay(model)).backward()
        if hook:
            hook(step)
        tracker.before_step()
        opt.step()
        tracker.step()


def test_every_tracked_quantity_equals_brute_force_on_materialized_weights():
    torch.manual_seed(0)
    model = Zoo()
    opt = torch.optim.SGD(tdecomp.param_groups(model, WD, FD), lr=LR, momentum=MOMENTUM)
    tracker = DynamicsTracker(model, opt, every=3, flush_every=2)
    expected: dict[int, dict] = {}
    weights = {0: _weights64(model)}

    def hook(step: int) -> None:  # before the update of ``step``: gradients and W_{step−1}
        weights[step - 1] = _weights64(model)
        expected[step] = {
            name: math.sqrt(sum(float(p.grad.double().square().sum()) for n, p in m.named_parameters()
                                if not n.endswith("bias")))
            for name, m in model.named_children()
        }

    _train(model, tracker, opt, steps=6, hook=hook)
    weights[6] = _weights64(model)
    tracker.close()
    assert [r["step"] for r in tracker.records] == [0, 3, 6]
    families = {"dense_conv": "dense", "head": "dense", "lowrank": "lowrank", "over": "lowrank", "cp": "cp",
                "tucker": "tucker", "tt": "tt", "ring": "tensor_ring"}
    for record in tracker.records:
        step = record["step"]
        assert set(record["layers"]) == set(families)
        for name, entry in record["layers"].items():
            w, layer = weights[step][name], getattr(model, name)
            assert entry["family"] == families[name]
            s = torch.linalg.svdvals(_matrix(w))
            p = s / s.sum()
            brute = {
                "norm": float(w.norm()),
                "nuclear": float(s.sum()),
                "sigma_max": float(s[0]),
                "stable_rank": float(w.norm() ** 2 / s[0] ** 2),
                "effective_rank": math.exp(-float(sum(q * math.log(q) for q in p.tolist() if q > 0))),
                "lr": LR,
                "eta_over_norm": LR / float(w.norm()),
                "eta_over_norm_sq": LR / float(w.norm()) ** 2,
            }
            decay = WD if families[name] == "dense" else FD
            brute["equilibrium"] = math.sqrt(2 * LR * decay / (1 + MOMENTUM))
            if step:
                brute["angle_step"] = _angle(weights[step - 1][name], w)
                brute["angle_interval"] = _angle(weights[step - 3][name], w)
                brute["grad_norm"] = expected[step][name]
            else:
                assert not {"angle_step", "angle_interval", "grad_norm"} & set(entry)
            for key, value in brute.items():
                assert entry[key] == pytest.approx(value, rel=1e-7, abs=1e-12), (step, name, key)
            assert entry["weight_decay"] == decay and entry["momentum"] == MOMENTUM
            if families[name] == "dense":
                assert not {"balancedness", "nuclear_bound", "factor_norms"} & set(entry)
    # the factor-side quantities, at the last record (factors are those of step 6)
    for name in ("lowrank", "over", "cp", "tucker", "tt", "ring"):
        entry, layer = tracker.records[-1]["layers"][name], getattr(model, name)
        norms = [float(f.detach().double().norm()) for f in layer.factors()]
        assert entry["factor_norms"] == pytest.approx(norms, rel=1e-10)
        assert entry["nuclear_bound"] == pytest.approx(0.5 * sum(n * n for n in norms), rel=1e-10)
        balancedness = float(copy.deepcopy(layer).double().balancedness().detach())
        assert entry["balancedness"] == pytest.approx(balancedness, rel=1e-9)


def _initial_entry(model: nn.Module) -> dict:
    """The step-0 record of the model's layer ``"0"``."""
    tracker = DynamicsTracker(model, torch.optim.SGD(model.parameters(), lr=0.1), every=1)
    tracker.before_step()
    tracker.close()
    return tracker.records[0]["layers"]["0"]


def test_lowrank_nuclear_bound_is_tight_at_spectral_init_and_bounds_the_nuclear_norm():
    model = nn.Sequential(tdecomp.factorize(nn.Linear(12, 10), "lowrank", 0.5))
    entry = _initial_entry(model)
    assert entry["nuclear_bound"] == pytest.approx(entry["nuclear"], rel=1e-6)  # balanced: equality
    with torch.no_grad():
        model[0].U.mul_(2.0)
        model[0].V.div_(2.0)  # same W, unbalanced factors: ½(4‖U‖² + ‖V‖²/4) > ‖W‖_*
    unbalanced = _initial_entry(model)
    assert unbalanced["nuclear"] == pytest.approx(entry["nuclear"], rel=1e-6)
    assert unbalanced["nuclear_bound"] > 1.5 * unbalanced["nuclear"]


def test_plain_loop_without_before_step_reads_gradients_after_the_update(tmp_path):
    torch.manual_seed(0)
    model = Zoo()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 4, (4,))
    with DynamicsTracker(model, opt, every=2, out=tmp_path) as tracker:
        for _ in range(4):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            tracker.step()
        grad = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.tt.factor_parameters()))
    records = read_dynamics(tmp_path)
    assert [r["step"] for r in records] == [2, 4]
    assert records[-1]["layers"]["tt"]["grad_norm"] == pytest.approx(grad, rel=1e-9)
    assert "angle_step" not in records[-1]["layers"]["tt"] and "angle_interval" in records[-1]["layers"]["tt"]


def test_non_zero_rank_writes_nothing(tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    model = Zoo()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    with DynamicsTracker(model, opt, every=1, out=tmp_path) as tracker:
        _train(model, tracker, opt, steps=2)
    assert tracker.step_count == 2 and not (tmp_path / DYNAMICS).exists()


@pytest.mark.parametrize("every,flush_every", [(0, 1), (1, -2), (2.5, 1)])
def test_bad_arguments_are_value_errors(every, flush_every):
    model = Zoo()
    with pytest.raises(ValueError, match="every"):
        DynamicsTracker(model, torch.optim.SGD(model.parameters(), lr=1), every=every, flush_every=flush_every)


# ------------------------------------------------------------------------------ with the trainer
FAST = dict(model="cnn", model_kwargs={"width": 0.25}, data="digits", subset=96, batch_size=32,
            epochs=3, lr=0.05, schedule="constant", family="lowrank", rank=0.3, progress=False)


class Crash(Callback):
    def on_epoch_end(self, trainer, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt


def test_trainer_writes_dynamics_and_resume_continues_them_identically(tmp_path):
    train(load_config(None, {**FAST, "track_every": 2, "out": str(tmp_path / "full")}))
    full = read_dynamics(tmp_path / "full")
    assert [r["step"] for r in full] == [0, 2, 4, 6, 8]  # 3 steps/epoch × 3 epochs
    cfg = load_config(None, {**FAST, "track_every": 2, "out": str(tmp_path / "cut")})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, [Crash()])
    with open(tmp_path / "cut" / DYNAMICS, "a") as f:  # a record written after the checkpoint
        f.write(json.dumps({"step": 7, "layers": {}}) + "\n")
    # same callback list as before (the trainer matches saved callback states by position)
    train(load_config(None, {**FAST, "track_every": 2, "out": str(tmp_path / "cut"), "resume": True}), [Crash()])
    resumed = read_dynamics(tmp_path / "cut")
    assert [r["step"] for r in resumed] == [0, 2, 4, 6, 8]
    for a, b in zip(full, resumed):
        for name in a["layers"]:
            for key, value in a["layers"][name].items():
                # non-numeric fields (e.g. the layer's family) must match exactly; pytest ≥ 9.2's
                # approx rejects strings
                expected = pytest.approx(value, rel=1e-5) if isinstance(value, (int, float)) else value
                assert b["layers"][name][key] == expected, (a["step"], name, key)


# ------------------------------------------------------------------------------ norm matching
def test_interpolate_matches_numpy():
    steps, values = [0, 10, 30], [1.0, 3.0, 2.0]
    for s in (-5, 0, 4, 10, 17, 30, 99):
        assert interpolate(steps, values, s) == pytest.approx(np.interp(s, steps, values))


def _record(tmp_path: Path, norms: dict[str, list[float]], steps: list[int]) -> Path:
    lines = [{"step": s, "layers": {n: {"family": "x", "norm": v[i]} for n, v in norms.items()}}
             for i, s in enumerate(steps)]
    path = tmp_path / DYNAMICS
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.mark.parametrize("family,rank", [("lowrank", 0.5), ("lowrank", 3.0), ("cp", 0.5), ("tucker", 0.5),
                                         ("tt", 0.5)])
def test_norm_matching_sets_the_interpolated_norm_and_keeps_the_direction(tmp_path, family, rank):
    model = nn.Sequential(tdecomp.factorize(nn.Conv2d(4, 6, 3).double(), family, rank, init="random"))
    path = _record(tmp_path, {"0": [1.0, 4.0]}, [0, 10])
    before = model[0].reconstruct().detach()
    NormMatching(model, path).rescale(step=7)
    after = model[0].reconstruct().detach()
    assert float(after.norm()) == pytest.approx(1.0 + 3.0 * 0.7, rel=1e-10)
    assert torch.allclose(after / after.norm(), before / before.norm(), atol=1e-12)


def test_norm_matching_rejects_records_of_another_model(tmp_path):
    model = nn.Sequential(tdecomp.factorize(nn.Linear(6, 5), "lowrank", 0.5))
    with pytest.raises(ValueError, match=r"\['0'\]"):
        NormMatching(model, _record(tmp_path, {"features.3": [1.0]}, [0]))
    with pytest.raises(ValueError, match="dense"):
        NormMatching(nn.Sequential(nn.Linear(6, 5)), _record(tmp_path, {"0": [1.0]}, [0]))


def test_trainer_norm_matching_follows_the_fd_trajectory(tmp_path):
    fd = tmp_path / "fd"
    train(load_config(None, {**FAST, "reg": "fd", "weight_decay": 0.05, "track_every": 1, "out": str(fd)}))
    matched = tmp_path / "matched"
    train(load_config(None, {**FAST, "reg": "none", "weight_decay": 0.05, "track_every": 1, "out": str(matched),
                             "norm_match": str(fd / DYNAMICS)}))
    reference, imposed = read_dynamics(fd), read_dynamics(matched)
    factorized = [n for n, e in reference[0]["layers"].items() if e["family"] != "dense"]
    assert factorized and [r["step"] for r in imposed] == [r["step"] for r in reference]
    for a, b in zip(reference, imposed):
        for name in factorized:
            assert b["layers"][name]["norm"] == pytest.approx(a["layers"][name]["norm"], rel=1e-5)
    # and the runs did differ: without decay the factors are not regularized the same way
    assert any(abs(b["layers"][n]["balancedness"] - a["layers"][n]["balancedness"]) > 1e-6
               for a, b in zip(reference[1:], imposed[1:]) for n in factorized)


def test_norm_matching_refuses_a_reference_run_that_has_not_finished(tmp_path):
    """A run folder (config.yaml) without summary.json is still being written: its trajectory would end early."""
    model = nn.Sequential(tdecomp.factorize(nn.Linear(6, 5), "lowrank", 0.5))
    path = _record(tmp_path, {"0": [1.0, 2.0]}, [0, 10])
    (tmp_path / "config.yaml").write_text("family: lowrank\n")
    with pytest.raises(ValueError, match="has not finished"):
        NormMatching(model, path)
    (tmp_path / "summary.json").write_text("{}")
    NormMatching(model, tmp_path)  # finished: accepted, by file or by folder
