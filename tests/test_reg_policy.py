"""RegPolicy: what each ``reg`` means (factor weight decay, FD coefficient, rebalancing, decay
strength, label), checked against the table of tdecomp/reg_policy.py written out by hand."""

from __future__ import annotations

import pytest
from torch import nn

import tdecomp
from tdecomp.config import TrainConfig
from tdecomp.reg_policy import RegPolicy

WD, FD, RATIO = 3e-4, 7e-4, 0.25


def policy(**values) -> RegPolicy:
    return RegPolicy.from_config(TrainConfig(**{"family": "lowrank", "weight_decay": WD, **values}))


# reg, fd_coef → (factor weight decay, FD λ in the loss, rebalances by default, decay strength λ)
TABLE = {
    ("fd", FD): (0.0, FD, True, FD),
    ("fd", None): (0.0, WD, True, WD),  # FD λ defaults to weight_decay
    ("fd", 0.0): (WD, 0.0, True, WD),  # no FD: plain weight decay on the factors (official, no --wd2fd)
    ("wd", FD): (WD, 0.0, False, WD),
    ("crs", FD): (WD * RATIO, 0.0, False, WD * RATIO),
    ("none", FD): (0.0, 0.0, False, 0.0),
}


@pytest.mark.parametrize(("reg", "fd_coef"), list(TABLE))
def test_each_reg_means_what_the_table_says(reg, fd_coef):
    factor_wd, fd, rebalances, strength = TABLE[reg, fd_coef]
    p = policy(reg=reg, fd_coef=fd_coef)
    assert p.factor_weight_decay(RATIO) == pytest.approx(factor_wd, rel=1e-15, abs=0)
    assert p.fd_coef == fd and p.applies_fd == (reg == "fd") and p.rebalances is rebalances
    assert p.decay_coefficient(RATIO) == pytest.approx(strength, rel=1e-15, abs=0)
    # dense runs: the decay of their dense weights, whatever reg says
    assert policy(reg=reg, fd_coef=fd_coef, family="dense").decay_coefficient(RATIO) == WD


@pytest.mark.parametrize(("reg", "fd_coef"), list(TABLE))
def test_param_groups_give_each_group_its_decay(reg, fd_coef):
    factor_wd, fd, _, _ = TABLE[reg, fd_coef]
    model = nn.Sequential(nn.Linear(12, 10), nn.BatchNorm1d(10), nn.Linear(10, 8), nn.Linear(8, 3))
    tdecomp.factorize_model(model, "lowrank", 0.5, skip={"0", "3"}, progress=False)
    groups = {g["name"]: g for g in policy(reg=reg, fd_coef=fd_coef, decay_norms=True).param_groups(model, RATIO)}
    assert groups["decay"]["weight_decay"] == WD and groups["no_decay"]["weight_decay"] == WD
    assert groups["factors"]["weight_decay"] == pytest.approx(factor_wd, rel=1e-15, abs=0)
    assert groups["factors"]["frobenius_decay"] == fd
    assert {id(p) for p in groups["factors"]["params"]} == {id(p) for p in model[2].factors()}


@pytest.mark.parametrize(("reg", "rebalance", "label"), [
    ("fd", None, "FD"), ("fd", True, "FD"), ("fd", False, "FD-norebal"), ("wd", None, "WD"),
    ("wd", False, "WD"), ("wd", True, "WD"), ("crs", None, "CRS"), ("none", None, "none"),
])
def test_reg_label(reg, rebalance, label):
    p = policy(reg=reg, rebalance=rebalance)
    assert p.reg_label() == label
    assert p.rebalances is (reg == "fd" if rebalance is None else rebalance)


def test_a_saved_config_mapping_missing_keys_reads_the_defaults():
    """Run folders written before a key existed ran at its default."""
    old = {"reg": "fd", "weight_decay": WD, "family": "cp"}  # no fd_coef, rebalance, fd_skip, decay_norms
    assert RegPolicy.from_config(old) == policy(family="cp")
    assert RegPolicy.from_config({**old, "rebalance": False}).reg_label() == "FD-norebal"
