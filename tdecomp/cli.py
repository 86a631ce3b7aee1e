"""The ``tdecomp`` command line: one subcommand per module in :mod:`tdecomp.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``,
and keeps heavy imports (plotting, training) inside ``run`` so that every command starts fast; it
may set ``parser.epilog`` to a function (called only for ``--help``) and define ``RESUME_ARGUMENT``,
the argument that makes a rerun continue an interrupted one. Adding a command is one module and one
name in :data:`COMMANDS` (a command ``a-b`` lives in module ``a_b``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys

from . import __version__

COMMANDS = ("train", "compress", "demo", "sweep", "plot", "compare", "records", "docs-tables", "bench")


def _available() -> dict[str, object]:
    found = {}
    for name in COMMANDS:
        module = f"tdecomp.commands.{name.replace('-', '_')}"
        try:
            found[name] = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
    return found


class _Parser(argparse.ArgumentParser):
    """An argument parser whose epilog may be a function, so that slow help text (registries,
    packaged configs) is built only when ``--help`` asks for it."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


class _TqdmHandler(logging.Handler):
    """Log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_TqdmHandler()])
    commands = _available()
    parser = _Parser(prog="tdecomp", description="Factorized neural layers: train, compare, plot, benchmark.")
    parser.add_argument("--version", action="version", version=f"tdecomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in commands.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    module = commands[args.command]
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # user errors: message, no traceback
        print(f"tdecomp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: where it stopped and the command that continues
        extra = getattr(module, "RESUME_ARGUMENT", None)
        again = shlex.join(["tdecomp", *argv, *([extra] if extra and argv[-1:] != [extra] else [])])
        print(f"tdecomp {args.command}: {err or 'interrupted'}; continue with: {again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
