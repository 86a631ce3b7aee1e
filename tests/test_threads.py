"""Thread cap of the demo and sweep workers (default one torch thread per worker)."""

from __future__ import annotations

import pytest
import torch

from tdecomp.cli import main
from tdecomp.experiments.launchers import cap_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cap_threads_sets_torch_and_zero_keeps_the_default(restore_threads):
    torch.set_num_threads(2)
    cap_threads(0)
    assert torch.get_num_threads() == 2
    cap_threads(1)
    assert torch.get_num_threads() == 1
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be an int ≥ 0"):
            cap_threads(bad)


@pytest.mark.parametrize("command", [["demo", "--seeds", "1", "--epochs", "1"], ["sweep", "digits"]])
def test_commands_default_to_one_thread_and_reject_bad_counts(command, tmp_path, monkeypatch, restore_threads):
    capped = []
    monkeypatch.setattr("tdecomp.experiments.launchers.cap_threads", lambda n: capped.append(n) or 1 / 0)
    out = ["--out", str(tmp_path / "o")] if command[0] == "demo" else ["--root", str(tmp_path / "o")]
    with pytest.raises(ZeroDivisionError):  # stops at the cap, before any training
        main([*command, *out])
    assert capped == [1]
    monkeypatch.undo()
    assert main([*command, *out, "--threads", "-2"]) == 2
