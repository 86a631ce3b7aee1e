"""The ``tdecomp`` command line: one subcommand per module in :mod:`tdecomp.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``,
and keeps heavy imports (plotting, training) inside ``run`` so that every command starts fast.
Adding a command is one module and one name in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("train", "compress", "demo", "sweep", "plot", "compare", "bench")


def _available() -> dict[str, object]:
    found = {}
    for name in COMMANDS:
        try:
            found[name] = importlib.import_module(f"tdecomp.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"tdecomp.commands.{name}":
                raise
    return found


class _TqdmHandler(logging.Handler):
    """Log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_TqdmHandler()])
    commands = _available()
    parser = argparse.ArgumentParser(
        prog="tdecomp", description="Factorized neural layers: train, compare, plot, benchmark."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in commands.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    args = parser.parse_args(argv)
    try:
        return int(commands[args.command].run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # user errors: message, no traceback
        print(f"tdecomp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
