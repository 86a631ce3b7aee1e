"""Family options: each family's schema drives factorize, TrainConfig (``family_options.NAME=value``),
``tdecomp train --help``, sweeps, and old run folders whose config.yaml held the options at the top."""

from __future__ import annotations

import pytest
import yaml
from torch import nn

import tdecomp
from tdecomp.commands.train import config_help
from tdecomp.config import TrainConfig, load_config
from tdecomp.experiments.sweep import expand, load_sweep
from tdecomp.train import Trainer, train
from tdecomp.train.runs import is_complete
from tests.helpers import FAMILIES

FAST = dict(model="cnn", model_kwargs={"width": 0.5}, data="digits", subset=128, batch_size=64, lr=0.05,
            progress=False)


def _tucker_layers(model: nn.Module) -> list[tdecomp.TuckerLayer]:
    return [m for m in model.modules() if isinstance(m, tdecomp.TuckerLayer) and m.spec.factor_kernel]


def test_a_family_option_set_on_the_command_line_reaches_every_layer():
    cfg = load_config(None, ["model=cnn", "model_kwargs.width=0.5", "data=digits", "subset=128", "family=tucker",
                             "rank=0.2", "family_options.fixed_spatial=false"])
    assert cfg.family_options == {"fixed_spatial": False}
    squashed = _tucker_layers(Trainer(cfg).model)
    full = _tucker_layers(Trainer(load_config(None, {**FAST, "family": "tucker", "rank": 0.2})).model)
    assert squashed and all(m.family_options == {"fixed_spatial": False} for m in squashed)
    # the kernel modes keep their size only by default (a 3×3 conv squashed at 0.2: rank < 3)
    assert all(m.rank[2:] == m.spec.factor_kernel for m in full)
    assert any(r < k for m in squashed for r, k in zip(m.rank[2:], m.spec.factor_kernel))


@pytest.mark.parametrize("items,message", [
    (["family=tucker", "family_options.fixed_spatal=false"],
     r"^family 'tucker' got unknown option\(s\) fixed_spatal; valid options: fixed_spatial$"),
    (["family=cp", "family_options.overcomplete=wide"], r"^family 'cp' got unknown option\(s\) overcomplete; "
                                                        r"valid options: none$"),
    (["family=tucker", "family_options.fixed_spatial=yes please"],
     r"^family 'tucker' option fixed_spatial must be a bool, got 'yes please'$"),
    (["family=lowrank", "family_options.overcomplete=tall"],
     r"^overcomplete='tall' is not valid; expected one of: 'balanced', 'wide', 'deep'$"),
    (["family=lowrank", "family_options=wide"], r"^family_options must map option names to values"),
])
def test_bad_family_options_are_one_line_errors_naming_the_valid_ones(items, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, items)


def test_the_same_options_check_guards_factorize():
    conv = nn.Conv2d(4, 4, 3)
    with pytest.raises(TypeError, match="unknown option.*valid options: fixed_spatial, implementation"):
        tdecomp.factorize(conv, "tucker", 0.5, fixed_spatal=False)
    with pytest.raises(ValueError, match="option fixed_spatial must be a bool, got 1"):
        tdecomp.factorize(conv, "tucker", 0.5, fixed_spatial=1)
    layer = tdecomp.factorize(conv, "lowrank", 0.5, overcomplete="deep")
    assert layer.family_options == {"overcomplete": "deep", "rank_rule": "min"} and layer.M is not None


def test_options_at_their_defaults_are_dropped_and_dense_has_none():
    cfg = TrainConfig(family="lowrank", family_options={"overcomplete": "balanced", "rank_rule": "paper"})
    assert cfg.family_options == {"rank_rule": "paper"}
    assert TrainConfig(family="tucker", family_options={"fixed_spatial": True}).family_options == {}
    assert TrainConfig(family="dense", family_options={"overcomplete": "wide"}).family_options == {}


def test_train_help_lists_every_familys_options_with_defaults_and_help():
    text = config_help()
    section = text[text.index("family options"):]
    for family in FAMILIES:
        cls = tdecomp.get_family(family)
        assert f"  {family}:" + ("" if cls.options else " none") in section
        for option in cls.options:
            assert f"    {option.name}=" in section and option.help in section
    assert "overcomplete=balanced {balanced, wide, deep}: how a rank" in section
    assert "fixed_spatial=true: keep the kernel modes at full rank" in section


def test_a_sweep_axis_over_a_family_option(tmp_path):
    sweep = load_sweep(None, ["family=lowrank", "rank_scale=1.5", "family_options.overcomplete=wide,deep",
                              f"out={tmp_path}"])
    jobs = expand(sweep)
    assert [j.config.family_options for j in jobs] == [{"overcomplete": "wide"}, {"overcomplete": "deep"}]
    assert [j.name for j in jobs] == ["family_options.overcomplete-wide", "family_options.overcomplete-deep"]
    with pytest.raises(ValueError, match="unknown option"):
        expand(load_sweep(None, ["family=cp", "family_options.overcomplete=wide,deep", f"out={tmp_path}"]))


def _legacy(config: dict) -> dict:
    """A config.yaml as written before family_options: the low-rank options at the top level."""
    legacy = {k: v for k, v in config.items() if k != "family_options"}
    return legacy | {"overcomplete": "balanced", "rank_rule": "min"} | config["family_options"]


def test_old_config_files_migrate_their_top_level_options():
    lowrank = TrainConfig.from_dict(_legacy(TrainConfig(family="lowrank").to_dict()) | {"overcomplete": "wide"})
    assert lowrank.family_options == {"overcomplete": "wide"}
    # the old code gave the two options to the low-rank family only: elsewhere they had no effect
    for family in ("tt", "dense"):
        old = _legacy(TrainConfig(family=family).to_dict()) | {"rank_rule": "paper"}
        assert TrainConfig.from_dict(old).family_options == {}
        assert TrainConfig(family=family).conflicts(old) == []
    assert TrainConfig(family="lowrank").conflicts(_legacy(lowrank.to_dict())) == ["family_options"]


def test_an_old_run_folder_resumes_and_is_recognised_as_complete(tmp_path):
    settings = {**FAST, "family": "lowrank", "rank": 0.3, "family_options": {"overcomplete": "deep"},
                "out": str(tmp_path)}
    train(load_config(None, {**settings, "epochs": 1}))
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(_legacy(yaml.safe_load(saved.read_text()))))
    assert "family_options" not in saved.read_text() and "overcomplete: deep" in saved.read_text()
    assert is_complete(load_config(None, {**settings, "epochs": 1}))  # a sweep skips it, as before
    train(load_config(None, {**settings, "epochs": 2, "resume": True}))
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
