"""``tdecomp train [CONFIG.yaml] key=value …``: one training run."""

from __future__ import annotations

import argparse

HELP = "train one model: tdecomp train [CONFIG.yaml] model=resnet20 data=digits family=FAMILY rank=0.25 …"
RESUME_ARGUMENT = "resume=true"  # appended to the command that continues an interrupted run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG.yaml | key=value",
        help="an optional YAML config (a path, or a packaged config's name such as digits) followed by "
        "key=value overrides; dotted keys reach nested values (model_kwargs.width=2)",
    )
    parser.epilog = config_help


def config_help() -> str:
    """The ``--help`` epilog: every config key with its default and choices, and the packaged configs."""
    import dataclasses

    import yaml

    from ..config import CHOICES, TrainConfig, default_values, registry_choices
    from ..layers import available_families, get_family
    from ..surgery import TARGETS
    from .paths import packaged_configs

    choices = {**registry_choices(), **CHOICES, "targets": tuple(TARGETS)}
    defaults = default_values()
    lines = ["config keys (key=default, then the choices):"]
    for f in dataclasses.fields(TrainConfig):
        default = yaml.safe_dump(defaults[f.name], default_flow_style=True, width=1000).strip()
        default = default.removesuffix("\n...").removesuffix(" ...").strip()
        listed = f"  {{{', '.join(choices[f.name])}}}" if f.name in choices else ""
        lines.append(f"  {f.name}={default}{listed}")
    lines += ["", "family options (family_options.NAME=value; NAME=default, the choices, what it does):"]
    for family in available_families():
        options = get_family(family).options
        lines.append(f"  {family}:" + ("" if options else " none"))
        lines += [f"    {option.describe()}" for option in options]
    lines += ["", "packaged configs (tdecomp train NAME …): " + ", ".join(packaged_configs())]
    return "\n".join(lines)


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
