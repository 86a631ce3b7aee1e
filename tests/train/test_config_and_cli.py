"""Configs, overrides, schedules and the command line."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tdecomp.cli import main
from tdecomp.config import TrainConfig, load_config, parse_overrides
from tdecomp.reg_policy import RegPolicy
from tdecomp.train.schedule import lr_multiplier


def test_overrides_are_typed_and_dotted():
    assert parse_overrides(["rank=0.25", "epochs=5", "rank2=[8, 8, 3, 3]", "model_kwargs.width=2", "resume=true"]) == {
        "rank": 0.25, "epochs": 5, "rank2": [8, 8, 3, 3], "model_kwargs": {"width": 2}, "resume": True,
    }
    cfg = load_config(None, ["family=tucker", "rank=[8,8,3,3]", "model_kwargs.width=2"])
    assert cfg.factor_rank == (8, 8, 3, 3) and cfg.model_kwargs == {"width": 2}


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: resnet20\nepochs: 7\nmodel_kwargs: {width: 2}\n")
    cfg = load_config(path, ["epochs=3", "model_kwargs.shortcut=B"])
    assert (cfg.model, cfg.epochs, cfg.model_kwargs) == ("resnet20", 3, {"width": 2, "shortcut": "B"})


@pytest.mark.parametrize("override,message", [
    ("famly=cp", "unknown config key 'famly' \\(did you mean 'family'\\?\\); valid keys: model"),
    ("family=svd", "family='svd' is not valid; expected one of: 'dense', 'cp', 'lowrank', ('tensor_ring', )?'tt'"),
    ("reg=l2", "reg='l2' is not valid; expected one of: 'fd', 'wd', 'crs', 'none'"),
    ("init=orthogonal", "init='orthogonal' is not valid"),
    ("model=resnet18", "model='resnet18' is not valid; expected one of: .*'resnet20'"),
    ("data=imagenet", "data='imagenet' is not valid; expected one of: 'cifar10'"),
    ("epochs=0", "epochs must be a positive int"),
    ("lr=-1", "lr must be a number ≥ 0"),
    ("rank=[a, b]", "rank must be a float ratio, an int or a list of ints"),
    ("milestones=[0.5, 2]", "milestones must be fractions"),
    ("fd_no_decay=feature.31", "fd_no_decay must be a list of module-name suffixes"),
    ("device=tpu", "device='tpu' is not valid"),
])
def test_bad_keys_and_values_are_rejected_with_the_valid_ones(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_cli_reports_user_errors_without_a_traceback(capsys):
    assert main(["train", "famly=cp"]) == 2
    err = capsys.readouterr().err
    assert "tdecomp train: error: unknown config key 'famly'" in err and "Traceback" not in err


def test_console_script_lists_its_commands():
    out = subprocess.run([sys.executable, "-m", "tdecomp.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "demo", "compare"):
        assert command in out.stdout


def test_step_cosine_and_warmup_schedules():
    step = lr_multiplier("step", 100, milestones=(0.5, 0.75), gamma=0.1)
    assert [step(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = lr_multiplier("cosine", 110, warmup_steps=10)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine(110) == pytest.approx(0.0)
    assert lr_multiplier("constant", 10)(7) == 1.0


def test_default_config_is_the_papers_optimizer():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.batch_size, cfg.weight_decay) == ("sgd", 0.1, 0.9, 128, 1e-4)
    assert cfg.milestones == [0.5, 0.75] and RegPolicy.from_config(cfg).fd_coef == cfg.weight_decay


def test_compile_modes_and_log_every():
    load = load_config
    assert load(None, ["compile=false"]).compile_mode is None
    assert load(None, ["compile=true"]).compile_mode == "default"
    assert load(None, ["compile=reduce-overhead"]).compile_mode == "reduce-overhead"
    with pytest.raises(ValueError, match="compile='fast' is not valid"):
        load(None, ["compile=fast"])
    with pytest.raises(ValueError, match="log_every must be an int ≥ 1"):
        load(None, ["log_every=0"])
