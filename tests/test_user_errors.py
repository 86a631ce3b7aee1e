"""Bad values and interruptions give one line that names the bad value or the fix (issue 16)."""

from __future__ import annotations

import logging
from urllib.error import URLError

import pytest

import tdecomp
from tdecomp.cli import main
from tdecomp.config import load_config

FAST = ["model=cnn", "model_kwargs.width=0.5", "data=digits", "subset=128", "batch_size=64", "progress=false"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("family", ["cp", "tucker", "tt"])
def test_ratio_above_one_is_rejected_for_families_without_an_overcomplete_form(family, tmp_path, capsys):
    with pytest.raises(ValueError, match=f"family '{family}' has no overcomplete form.*lowrank"):
        load_config(None, [f"family={family}", "rank=2.5"])
    with pytest.raises(ValueError, match="no overcomplete form"):
        tdecomp.factorize(__import__("torch").nn.Linear(8, 8), family, 2.5)
    assert main(["train", f"family={family}", "rank=2.5", f"out={tmp_path}/run"]) == 2
    assert "rank=2.5" in _one_line_error(capsys) and not (tmp_path / "run").exists()


def test_lowrank_keeps_its_overcomplete_ratios():
    assert load_config(None, ["family=lowrank", "rank=2.5"]).rank == 2.5


@pytest.mark.parametrize("rank", ["0", "-0.1"])
def test_demo_rejects_a_non_positive_rank_before_training(rank, tmp_path, capsys):
    assert main(["demo", "--rank", rank, "--out", str(tmp_path / "demo"), "--seeds", "1"]) == 2
    assert "rank must be positive" in _one_line_error(capsys)
    assert not (tmp_path / "demo").exists()  # nothing trained


@pytest.mark.parametrize("items", [[], ["seed=0,1"]])
def test_sweep_without_a_config_is_an_error(items, tmp_path, capsys):
    assert main(["sweep", *items, "--root", str(tmp_path / "sweep")]) == 2
    err = _one_line_error(capsys)
    assert "needs a config" in err and "compression_digits" in err
    assert not (tmp_path / "sweep").exists()


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="tdecomp"):
        assert main(["train", *FAST, "epochs=1", f"out={tmp_path}/new", "resume=true"]) == 0
    assert f"resume=true: {tmp_path / 'new'} holds no checkpoint (last.pt) yet; starting a fresh run" in caplog.text


def test_corrupt_checkpoint_is_one_line_naming_previous_pt(tmp_path, capsys):
    run = [*FAST, f"out={tmp_path}/run"]
    assert main(["train", *run, "epochs=2"]) == 0
    (tmp_path / "run" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    assert main(["train", *run, "epochs=3", "resume=true"]) == 2
    err = _one_line_error(capsys)
    run_dir = tmp_path / "run"
    assert f"copy {run_dir / 'previous.pt'} over {run_dir / 'last.pt'}" in err and "resume=true" in err


def test_ctrl_c_names_the_epoch_and_the_command_that_continues(tmp_path, capsys, monkeypatch, caplog):
    from tdecomp.train.trainer import Trainer

    train_epoch = Trainer._train_epoch

    def interrupt_in_third_epoch(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupt_in_third_epoch)
    command = ["train", *FAST, "epochs=3", f"out={tmp_path}/run"]
    assert main(command) == 130
    err = _one_line_error(capsys)
    again = "tdecomp " + " ".join(command) + " resume=true"
    assert err.startswith("tdecomp train: interrupted after epoch 2 of 3") and err.endswith(f"continue with: {again}")
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    with caplog.at_level(logging.INFO, logger="tdecomp"):
        assert main(again.split()[1:]) == 0  # the printed command continues the run
    assert "after epoch 2 (step 4)" in caplog.text


def test_offline_download_says_where_to_put_the_files(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    assert main(["train", "data=cifar10", "download=true", f"data_dir={tmp_path}/data", f"out={tmp_path}/run"]) == 2
    err = _one_line_error(capsys)
    assert "could not be downloaded" in err and f"into {tmp_path / 'data'} (giving {tmp_path / 'data'}" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"tdecomp {tdecomp.__version__}"


def test_train_help_lists_keys_defaults_choices_and_packaged_configs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "  rank=0.25\n" in out and "  epochs=10\n" in out
    families = "{" + ", ".join(("dense", *tdecomp.available_families())) + "}"
    assert f"  family=dense  {families}\n" in out and "  reg=fd  {fd, wd, crs, none}\n" in out
    assert "packaged configs" in out and "compression_digits" in out
