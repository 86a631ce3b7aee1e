"""environment.yml and pyproject.toml declare the same dependencies (conda must not leave pip to
replace torch), and the .ci entry point runs the README's test command verbatim."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_covers_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = {_name(d) for d in env if isinstance(d, str)}
    pip = {_name(d) for group in env if isinstance(group, dict) for d in group["pip"] if not d.startswith("-e")}
    conda_names = {"pytorch": "torch"}
    provided = {conda_names.get(n, n) for n in conda} | pip
    assert wanted <= provided, f"missing from environment.yml: {sorted(wanted - provided)}"
    assert {"torch", "torchvision"} <= {conda_names.get(n, n) for n in conda}, "torch must come from conda"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = 'python -m pip install -q -e ".[test]" && python -m pytest'
    assert f"```bash\n{command}\n```" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m venv" in ci  # a fresh environment, as a new user has
    for step in command.split(" && "):  # .ci/run times the two steps separately
        assert any(line.strip().startswith(step) for line in ci.splitlines()), step


def test_pyproject_lists_every_package_and_maps_analysis_and_experiments_into_tdecomp():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools["package-dir"]
    assert mapped == {"tdecomp.analysis": "analysis", "tdecomp.experiments": "experiments"}
    found = set()
    for root, prefix in [(ROOT / "tdecomp", "tdecomp"), *((ROOT / d, name) for name, d in mapped.items())]:
        for init in root.rglob("__init__.py"):
            found.add(".".join([prefix, *init.parent.relative_to(root).parts]))
    assert set(setuptools["packages"]) == found
    assert not {"analysis", "experiments"} & {p.split(".")[0] for p in setuptools["packages"]}


def test_analysis_and_experiments_come_from_the_checkout_tdecomp_came_from():
    import tdecomp
    import tdecomp.analysis
    import tdecomp.experiments

    package = Path(tdecomp.__file__).parent
    for name, module in (("analysis", tdecomp.analysis), ("experiments", tdecomp.experiments)):
        found = Path(module.__file__).parent
        assert found in (package / name, package.parent / name), (
            f"tdecomp.{name} from {found}, tdecomp from {package}: reinstall this checkout (pip install -e .)")
