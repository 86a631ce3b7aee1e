"""Every Python block of README.md and docs/*.md marked runnable runs as written.

A block is marked by an HTML comment line starting with ``<!-- runnable`` right before its
```` ```python```` fence (invisible on GitHub). Blocks run in a fresh namespace, in a temporary
working directory, so they may write files. A block importing a package of the ``test`` extra that is
missing (:data:`OPTIONAL`) skips, saying which.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("timm", "transformers", "peft")
MARKED_BLOCK = re.compile(r"^<!-- runnable[^\n]*-->\n```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _runnable_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in MARKED_BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return blocks


BLOCKS = _runnable_blocks()


def test_the_readme_library_snippet_is_marked_runnable():
    assert any(where.startswith("README.md") for where, _ in BLOCKS)


@pytest.mark.parametrize("where,code", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_runnable_doc_block(where, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    for package in OPTIONAL:
        if re.search(rf"^(from|import) {package}\b", code, re.MULTILINE):
            pytest.importorskip(package, reason=f"{package} is not installed (pip install -e '.[test]')")
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})
