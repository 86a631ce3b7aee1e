"""``tdecomp docs-tables [--check]``: rebuild every results table (and figure) in the docs from committed records.

A table in README.md or docs/*.md that reports runs sits in a block whose opening comment is the
``tdecomp compare`` command that makes it, reading records committed under ``docs/data/``::

    <!-- tdecomp-table: compare docs/data/x.jsonl --by family,method,rank --pivot rank --tables pivot -->

    | family | method | rank=0.1 | …

    <!-- /tdecomp-table -->

The block holds exactly what that command prints as tables (``--tables`` picks which). A block may
also name a figure, ``--figure docs/figures/x.png``, which is rewritten from the same records. A block
may instead run ``plot RUN … --out docs/figures/DIR --table`` on run folders committed under
``docs/data/``: it holds the dynamics table and the figures (PNG) go to ``--out``. Paths
are relative to the repository root (``--root``). ``--check`` rewrites nothing: it fails if any block's
text differs from what its records give, or if a named figure is missing or cannot be drawn (figures
are drawn, not compared pixel by pixel).
"""

from __future__ import annotations

import argparse
import re
import shlex
import tempfile
from pathlib import Path

HELP = "rewrite (or --check) every table and figure block of the docs from its committed records"
BLOCK = re.compile(r"^<!-- tdecomp-table: (?P<command>.*?) -->\n(?P<body>.*?)^<!-- /tdecomp-table -->$",
                   re.MULTILINE | re.DOTALL)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="Markdown files to process (default: README.md and docs/*.md under --root)")
    parser.add_argument("--root", default=".", help="the repository root the blocks' paths are relative to "
                        "(default: .)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a block differs from its records or its figure is missing")


class _BlockParser(argparse.ArgumentParser):
    """``compare``'s arguments, raising ``ValueError`` instead of exiting."""

    def error(self, message: str):
        raise ValueError(message)


def doc_files(root: Path) -> list[Path]:
    """README.md and docs/*.md under ``root`` (those that exist)."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def render(command: str, root: Path, figure_root: Path) -> tuple[str, str | None]:
    """The body of the block whose opening comment reads ``command`` (``compare …``) and the figure it
    names (if any), which is written below ``figure_root`` (the repository root, or a scratch folder
    when checking)."""
    from .compare import add_arguments as compare_arguments
    from .compare import report_of

    words = shlex.split(command)
    if words[:1] == ["plot"]:
        return _render_plot(words[1:], root, figure_root)
    if words[:1] != ["compare"]:
        raise ValueError(f"a tdecomp-table block runs compare or plot, got {command!r}")
    parser = _BlockParser(prog="tdecomp compare", add_help=False)
    compare_arguments(parser)
    args = parser.parse_args(words[1:])
    args.runs = [str(root / source) for source in args.runs]
    figure = args.figure
    if figure:
        args.figure = str(figure_root / figure)
    return f"\n{report_of(args, None).text.strip()}\n\n", figure


def _render_plot(words: list[str], root: Path, figure_root: Path) -> tuple[str, str | None]:
    """A ``plot … --out DIR --table`` block: its table, and its figures written below ``figure_root``;
    the figure checked for presence is DIR's training-curves PNG."""
    from .plot import add_arguments as plot_arguments
    from .plot import figures_and_table

    parser = _BlockParser(prog="tdecomp plot", add_help=False)
    plot_arguments(parser)
    args = parser.parse_args(words)
    if not args.out or not args.table:
        raise ValueError("a plot block needs --out (the figures' folder) and --table")
    for run in args.runs:
        if not (root / run).is_dir():
            raise FileNotFoundError(f"no run folder {run}")
    out = args.out
    args.runs, args.out = [str(root / r) for r in args.runs], str(figure_root / out)
    _, table = figures_and_table(args, formats=("png",))
    return f"\n{table.strip()}\n\n", f"{out}/training_curves.png"


def process(path: Path, root: Path, check: bool) -> list[str]:
    """Rewrite the blocks of ``path`` (or, with ``check``, list where they differ from their records)."""
    text = path.read_text()
    problems: list[str] = []
    pieces, last = [], 0
    with tempfile.TemporaryDirectory() as scratch:
        for match in BLOCK.finditer(text):
            where = f"{path}:{text.count(chr(10), 0, match.start()) + 1}"
            try:
                body, figure = render(match["command"], root, Path(scratch) if check else root)
            except (ValueError, FileNotFoundError) as err:
                problems.append(f"{where}: {err}")
                continue
            if check and body != match["body"]:
                problems.append(f"{where}: the table differs from what its records give; run tdecomp docs-tables")
            if check and figure and not (root / figure).is_file():
                problems.append(f"{where}: figure {figure} is missing; run tdecomp docs-tables")
            pieces += [text[last:match.start("body")], body]
            last = match.end("body")
    rebuilt = "".join([*pieces, text[last:]])
    if not check and not problems and rebuilt != text:
        path.write_text(rebuilt)
    return problems


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    files = [Path(f) for f in args.files] or doc_files(root)
    problems = [problem for path in files for problem in process(path, root, args.check)]
    for problem in problems:
        print(problem)
    blocks = sum(len(BLOCK.findall(p.read_text())) for p in files)
    verb = "checked" if args.check else "rebuilt"
    print(f"{verb} {blocks} blocks in {len(files)} files: {len(problems)} problems")
    return 1 if problems else 0
