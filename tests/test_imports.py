"""The package's import graph is acyclic: lower layers never import upward; ``import tdecomp`` has
no side effects; every module names analysis and experiments by their installed names.

The graph is read from the source (every ``import`` statement, also inside functions, except
under ``if TYPE_CHECKING:``), so a cycle hidden behind a function-local import is caught too.
An edge goes to the module named, or to ``pkg.name`` when ``from pkg import name`` names a
submodule; a module's implicit import of its parent packages is not an edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tdecomp
import tdecomp.analysis
import tdecomp.experiments

PACKAGES = {"tdecomp": tdecomp, "tdecomp.analysis": tdecomp.analysis, "tdecomp.experiments": tdecomp.experiments}


def _modules() -> dict[str, Path]:
    """Dotted name → file for every module of the installed layout (analysis/ mapped into tdecomp)."""
    found: dict[str, Path] = {}
    for prefix, package in PACKAGES.items():
        root = Path(package.__file__).parent
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if any(not (root.joinpath(*parts[:k]) / "__init__.py").is_file() for k in range(len(parts))):
                continue  # not inside a package (e.g. a data folder)
            found[".".join([prefix, *parts])] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in out if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of module names (first == last), or None; iterative DFS."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_graph_sees_the_whole_package():
    graph = import_graph()
    assert {"tdecomp.train.trainer", "tdecomp.analysis.dynamics", "tdecomp.experiments.sweep"} <= set(graph)
    assert "tdecomp.train.callbacks" in graph["tdecomp.analysis.dynamics"]
    assert "tdecomp.layers.base" in graph["tdecomp.layers.cp"]  # relative import resolved


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


# ---------------------------------------------------------------- no import side effects
ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_NAMES = ("analysis", "experiments")  # installed as tdecomp.analysis, tdecomp.experiments
IMPORTERS = ("import_module", "files", "__import__", "find_spec")  # importlib, importlib.resources


def test_import_tdecomp_imports_no_analysis_and_leaves_its_path_alone(tmp_path):
    code = ("import os, sys, tdecomp; "
            "print('tdecomp.analysis' in sys.modules, 'tdecomp.train' in sys.modules, "
            "tdecomp.__path__ == [os.path.dirname(tdecomp.__file__)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_a_training_run_imports_analysis_only_when_a_key_asks_for_it(tmp_path):
    code = ("import sys; from tdecomp.config import load_config; from tdecomp.train import train; "
            "settings = dict(data='digits', subset=64, epochs=1, progress=False, device='cpu'); "
            f"train(load_config(None, dict(settings, out={str(tmp_path / 'a')!r}))); "
            "print('tdecomp.analysis' in sys.modules); "
            f"train(load_config(None, dict(settings, track_every=1, out={str(tmp_path / 'b')!r}))); "
            "print('tdecomp.analysis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def checkout_name_uses(source: str, filename: str = "<source>") -> list[str]:
    """Where ``source`` reaches analysis/experiments by their checkout names: ``import analysis…``,
    ``from experiments… import``, or ``importlib``/``resources`` asked for ``"experiments…"``."""

    def checkout_name(name: str) -> bool:
        return name.split(".")[0] in CHECKOUT_NAMES

    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in IMPORTERS and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{filename}:{node.lineno} {name}" for name in names if checkout_name(name)]
    return found


def test_the_scanner_finds_planted_checkout_names():
    planted = ("import analysis.dynamics\nfrom experiments.sweep import expand\n"
               "resources.files('experiments')\nimportlib.import_module('analysis')\n"
               "from tdecomp.experiments import sweep\nfrom . import analysis\n"
               "resources.files('tdecomp.experiments')\n")
    assert [u.split(" ", 1)[1] for u in checkout_name_uses(planted)] == [
        "analysis.dynamics", "experiments.sweep", "experiments", "analysis"]


def test_every_module_uses_the_installed_names():
    files = [p for folder in ("tdecomp", "analysis", "experiments", "tests", "benchmarks")
             for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 100
    found = [use for path in files for use in checkout_name_uses(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "use tdecomp.analysis / tdecomp.experiments: " + "; ".join(found)
