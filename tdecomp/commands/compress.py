"""``tdecomp compress SOURCE family=… rank=… allocation=… finetune_epochs=N``: compress a trained model."""

from __future__ import annotations

import argparse

HELP = ("factorize a trained dense run (SI), evaluate, fine-tune: tdecomp compress runs/dense family=FAMILY "
        "rank=0.1 allocation=energy finetune_epochs=3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="a dense run folder (config.yaml, last.pt), or a checkpoint file with model=NAME data=…")
    parser.add_argument(
        "items", nargs="*", metavar="key=value",
        help="family, rank (a float parameter ratio), allocation (uniform | energy | stable-rank), "
        "finetune_epochs (default 1) and any training key (lr, reg, out, …); out defaults to "
        "SOURCE-FAMILY-ALLOCATION-RANK next to SOURCE",
    )


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..compress import compress, source_config
    from ..config import parse_overrides

    overrides = parse_overrides(args.items)
    epochs = overrides.pop("finetune_epochs", 1)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"finetune_epochs must be an int ≥ 1, got {epochs!r}")
    overrides["epochs"] = epochs
    config = source_config(args.source, overrides)
    if "out" not in overrides:
        source = Path(args.source)
        stem = source.name if source.is_dir() else source.stem
        config.out = str(source.parent / f"{stem}-{config.family}-{config.allocation}-{config.rank}")
    print(json.dumps(compress(config), indent=2))
    return 0
