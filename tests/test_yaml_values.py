"""Numbers in scientific notation without a dot (``1e-6``) are numbers everywhere a config value is read:
overrides, config files, sweep axes and ``--where`` (PyYAML alone reads them as strings)."""

from __future__ import annotations

import pytest
import yaml

from tdecomp import yaml_values
from tdecomp.config import load_config, parse_overrides


@pytest.mark.parametrize("text,value", [("1e-6", 1e-6), ("5E-4", 5e-4), ("-2e+3", -2000.0), ("1.5e-3", 1.5e-3),
                                        (".5", 0.5), ("1_000", 1000), ("3", 3), ("abc", "abc"), ("1e", "1e"),
                                        ("[1e-6, 2]", [1e-6, 2]), ("e5", "e5"), ("0x10", 16)])
def test_scientific_notation_is_a_float_and_the_rest_is_yaml(text, value):
    assert yaml_values.load(text) == value
    assert type(yaml_values.load(text)) is type(value)


def test_pyyaml_alone_reads_an_exponent_without_a_dot_as_text():
    """The reason this module exists (if PyYAML changes, the module can go)."""
    assert yaml.safe_load("1e-6") == "1e-6"


def test_overrides_config_files_and_sweep_axes_take_1e_minus_6(tmp_path):
    from tdecomp.experiments.sweep import expand, load_sweep

    assert parse_overrides(["fd_coef=1e-6"]) == {"fd_coef": 1e-6}
    config_file = tmp_path / "c.yaml"
    config_file.write_text("model: cnn\ndata: digits\nfd_coef: 1e-6\nweight_decay: 5e-4\n")
    config = load_config(str(config_file), {})
    assert config.fd_coef == 1e-6 and config.weight_decay == 5e-4
    sweep = load_sweep(str(config_file), ["fd_coef=1e-6,1e-5"], root=tmp_path / "runs")
    assert sorted(job.config.fd_coef for job in expand(sweep)) == [1e-6, 1e-5]
