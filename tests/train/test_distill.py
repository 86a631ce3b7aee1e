"""Distillation fine-tuning: the loss against KL divergences computed independently, the teacher
seeing the student's own call, and `tdecomp compress … distill=T` training through it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tdecomp.cli import main
from tdecomp.config import load_config
from tdecomp.tasks import ClassificationTask
from tdecomp.train.distill import DistillationTask

F64 = torch.float64


def _pair() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    student, teacher = nn.Linear(6, 5).double(), nn.Linear(6, 5).double()
    return student, teacher, (torch.randn(8, 6, dtype=F64), torch.randint(0, 5, (8,)))


def test_alpha_one_and_temperature_one_is_the_kl_divergence():
    student, teacher, (x, y) = _pair()
    loss, stats = DistillationTask(ClassificationTask(), teacher, 1.0, 1.0).training_step(student, (x, y))
    expected = F.kl_div(F.log_softmax(student(x), 1), F.softmax(teacher(x), 1), reduction="batchmean")
    torch.testing.assert_close(loss, expected)
    assert stats["count"] == 8.0  # the task's own counts
    assert float(stats["loss_sum"]) == pytest.approx(8 * float(F.cross_entropy(student(x), y)))


@pytest.mark.parametrize("temperature,weight", [(4.0, 0.5), (2.0, 0.0), (0.5, 0.9)])
def test_the_loss_mixes_task_and_tempered_kl(temperature, weight):
    student, teacher, (x, y) = _pair()
    loss, _ = DistillationTask(ClassificationTask(), teacher, temperature, weight).training_step(student, (x, y))
    p = torch.softmax(teacher(x) / temperature, 1)  # KL(p ‖ q) = Σ p (log p − log q), per example
    kl = (p * (p.log() - torch.log_softmax(student(x) / temperature, 1))).sum(1).mean()
    expected = (1 - weight) * F.cross_entropy(student(x), y) + weight * temperature**2 * kl
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-7)
    loss.backward()
    assert student.weight.grad is not None and teacher.weight.grad is None  # the teacher only teaches


def test_sequence_outputs_average_the_kl_over_positions():
    student, teacher = nn.Linear(6, 5).double(), nn.Linear(6, 5).double()

    class Positions(ClassificationTask):
        def training_step(self, model, batch):
            x, y = batch
            logits = model(x)  # (N, T, V)
            loss = F.cross_entropy(logits.reshape(-1, 5), y.reshape(-1))
            return loss, {"count": float(y.numel())}

    x, y = torch.randn(3, 4, 6, dtype=F64), torch.randint(0, 5, (3, 4))
    loss, _ = DistillationTask(Positions(), teacher, 1.0, 1.0).training_step(student, (x, y))
    expected = F.kl_div(F.log_softmax(student(x), -1).reshape(-1, 5), F.softmax(teacher(x), -1).reshape(-1, 5),
                        reduction="batchmean")
    torch.testing.assert_close(loss, expected)


def test_distill_needs_a_teacher_and_a_sane_weight():
    with pytest.raises(ValueError, match="distill=2.*init_from.*empty"):
        load_config(None, {"family": "lowrank", "distill": 2})
    with pytest.raises(ValueError, match="distill_weight must be a number in \\[0, 1\\]"):
        load_config(None, {"distill_weight": 1.5})
    with pytest.raises(ValueError, match="distill must be a temperature"):
        load_config(None, {"distill": -1})


def test_compress_distils_from_the_dense_source(tmp_path, monkeypatch):
    from tdecomp.train import train

    source = tmp_path / "dense"
    train(load_config(None, {"model": "cnn", "model_kwargs": {"width": 0.25}, "data": "digits", "batch_size": 128,
                             "epochs": 1, "progress": False, "out": str(source), "subset": 256}))
    teachers, calls = [], []
    real = DistillationTask.training_step

    def spy(self, model, batch):
        teachers.append(self.teacher)
        calls.append((self.temperature, self.weight))
        return real(self, model, batch)

    monkeypatch.setattr(DistillationTask, "training_step", spy)
    assert main(["compress", str(source), "family=tt", "rank=0.3", "distill=3", "distill_weight=0.7",
                 "finetune_epochs=1"]) == 0
    out = tmp_path / "dense-tt-uniform-0.3-distill3"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distill"] == 3 and summary["distill_weight"] == 0.7
    assert calls and set(calls) == {(3, 0.7)}
    teacher = teachers[0]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    dense = torch.load(source / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(v, dense[k]) for k, v in teacher.state_dict().items())  # the source, untouched
