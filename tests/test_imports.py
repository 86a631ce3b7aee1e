"""The package's import graph is acyclic: lower layers never import upward.

The graph is read from the source (every ``import`` statement, also inside functions, except
under ``if TYPE_CHECKING:``), so a cycle hidden behind a function-local import is caught too.
An edge goes to the module named, or to ``pkg.name`` when ``from pkg import name`` names a
submodule; a module's implicit import of its parent packages is not an edge.
"""

from __future__ import annotations

import ast
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
