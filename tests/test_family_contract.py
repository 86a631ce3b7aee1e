"""The family contract: a family is one file. No module outside ``tdecomp/layers/<family>.py`` names a
built-in family in a string (so allocation, separable, surgery, config, bench, figures and
experiments ask the families instead), nor imports a family's private helper."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import tdecomp

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("tdecomp", "analysis", "experiments")


def _built_in_families() -> dict[str, Path]:
    """Each family registered by tdecomp itself → its file."""
    classes = {name: tdecomp.get_family(name) for name in tdecomp.available_families()}
    return {name: Path(sys.modules[cls.__module__].__file__).resolve()
            for name, cls in classes.items() if cls.__module__.startswith("tdecomp.layers.")}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants (first statement of a module, class or function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            value = first.value if isinstance(first, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def family_names_in_strings(source: str, names: list[str]) -> list[tuple[int, str]]:
    """``(line, text)`` of every non-docstring string constant, f-string parts included, that equals
    or contains one of ``names`` as a whole word."""
    word = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and word.search(node.value)]


def private_family_imports(source: str, package: str, family_modules: set[str]) -> list[tuple[int, str]]:
    """``(line, name)`` of every ``_private`` name imported from one of ``family_modules``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base in family_modules:
                found += [(node.lineno, a.name) for a in node.names if a.name.startswith("_")]
    return found


def _modules() -> list[tuple[Path, str]]:
    """(file, its package) for every module scanned; analysis/ and experiments/ install into tdecomp."""
    out = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            dotted = ".".join(parts if top == "tdecomp" else ("tdecomp", *parts))
            out.append((path, dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]))
    return out


def test_the_scan_sees_every_module_and_the_built_in_families():
    families = _built_in_families()
    assert set(families) == {"lowrank", "cp", "tucker", "tt"}
    scanned = {path for path, _ in _modules()}
    assert {ROOT / "tdecomp/allocation.py", ROOT / "tdecomp/config.py", ROOT / "analysis/style.py",
            ROOT / "experiments/fd_stability.py", ROOT / "tdecomp/bench/layers.py"} <= scanned
    assert set(families.values()) <= scanned


def test_no_module_outside_a_family_file_names_a_family():
    families = _built_in_families()
    names, skipped = sorted(families), set(families.values())
    found = {f"{path.relative_to(ROOT)}:{line}": text for path, _ in _modules() if path not in skipped
             for line, text in family_names_in_strings(path.read_text(), names)}
    assert not found, f"family names outside the family files (ask the family class instead): {found}"


def test_no_module_imports_a_familys_private_helper():
    modules = {f"tdecomp.layers.{path.stem}" for path in _built_in_families().values()}
    found = {f"{path.relative_to(ROOT)}:{line}": name for path, package in _modules()
             if f"{package}.{path.stem}" not in modules
             for line, name in private_family_imports(path.read_text(), package, modules)}
    assert not found, f"private family helpers imported outside their file: {found}"


@pytest.mark.parametrize("source,hits", [
    ('FAMILY = "cp"', [(1, "cp")]),
    ('x = f"family {name} is not tucker-shaped"', [(1, " is not tucker-shaped")]),
    ('"""A docstring may say lowrank."""\ndef f():\n    """So may this: tt."""\n    return "ttt, cpu, lowrank_x"', []),
    ('def f():\n    return {"mode": "tt"}', [(2, "tt")]),
])
def test_the_string_scan_finds_names_in_code_and_not_in_docstrings(source, hits):
    assert family_names_in_strings(source, ["cp", "lowrank", "tt", "tucker"]) == hits


def test_the_import_scan_finds_private_helpers():
    source = "from .layers.tt import _tt_shape, TTLayer\nfrom .layers import tt\n"
    assert private_family_imports(source, "tdecomp", {"tdecomp.layers.tt"}) == [(1, "_tt_shape")]
