"""``tdecomp train [CONFIG.yaml] key=value …``: one training run."""

from __future__ import annotations

import argparse

HELP = "train one model: tdecomp train [CONFIG.yaml] model=resnet20 data=digits family=tucker rank=0.25 …"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG.yaml | key=value",
        help="an optional YAML config (a path, or a packaged config's name such as digits) followed by "
        "key=value overrides; dotted keys reach nested values (model_kwargs.width=2)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from ..config import load_config
    from ..train import train
    from .paths import resolve_config

    path = None
    items = list(args.items)
    if items and "=" not in items[0]:
        path = resolve_config(items.pop(0))
    config = load_config(path, items)
    summary = train(config)
    if summary:
        print(json.dumps(summary, indent=2))
    return 0
