"""``tdecomp compress SOURCE family=… rank=… init=… allocation=… finetune_epochs=N distill=T``: compress a
trained model."""

from __future__ import annotations

import argparse

HELP = ("factorize a trained dense run (SI, or SI whitened by calibration inputs), evaluate, fine-tune "
        "(optionally distilling from the dense source): tdecomp compress runs/dense family=FAMILY rank=0.1 "
        "init=whitened allocation=whitened-energy finetune_epochs=3 distill=4")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="a dense run folder (config.yaml, last.pt), or a checkpoint file with model=NAME data=…")
    parser.add_argument(
        "items", nargs="*", metavar="key=value",
        help="family, rank (a float parameter ratio), init (spectral | whitened: SI by each layer's output "
        "error on calibration_batches training batches, default 8), allocation (uniform | energy | stable-rank "
        "| whitened-energy | fisher), finetune_epochs (default 1), distill (a temperature T > 0: the dense "
        "SOURCE teaches, loss (1 − α)·task + α·T²·KL; default 0, off) with distill_weight α (default 0.5), and "
        "any training key (lr, reg, out, …); out defaults to SOURCE-FAMILY-ALLOCATION-RANK next to SOURCE, "
        "with -INIT and -distillT appended for init≠spectral and distill > 0",
    )


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..compress import compress, run_label, source_config
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
        label = run_label(config.family, config.allocation, config.rank, config.init, config.distill)
        config.out = str(source.parent / f"{stem}-{label}")
    print(json.dumps(compress(config), indent=2))
    return 0
