"""``tdecomp bench``: time factorized layers against dense and tensorly-torch; JSON + Markdown + figure."""

from __future__ import annotations

import argparse
import shlex

HELP = "benchmark fwd+bwd of dense vs tdecomp vs tensorly-torch layers, SI, factorize_model and FD"


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _command(args: argparse.Namespace) -> str:
    """The ``tdecomp bench`` command line equivalent to ``args`` (recorded in the outputs)."""
    words = ["tdecomp", "bench", "--suite", args.suite, "--out", args.out]
    for flag, value in (("--device", args.device), ("--threads", args.threads), ("--repeats", args.repeats)):
        if value is not None:
            words += [flag, str(value)]
    for flag, value in (("--amp", args.amp), ("--compile", args.compile)):
        if value not in (None, "none"):
            words += [flag, value]
    if args.tltorch_layers is not None:
        words += ["--tltorch-layers", str(args.tltorch_layers)]
    for flag, values in (("--ratios", args.ratios), ("--batch-sizes", args.batch_sizes), ("--models", args.models),
                         ("--si-solvers", args.si_solvers)):
        if values is not None:
            words += [flag, ",".join(map(str, values))]
    return shlex.join(words + (["--quick"] if args.quick else []))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="all", choices=("layers", "init", "surgery", "fd", "train", "all"),
                        help="what to time (default: all = every suite but train)")
    parser.add_argument("--models", type=lambda t: tuple(v for v in t.split(",") if v), default=None,
                        help="train suite: workloads, comma-separated (default resnet32x2,wrn28_10,vgg19,"
                             "transformer_small); init/surgery suites: model names (default resnet32,wrn28_10)")
    parser.add_argument("--si-solvers", type=lambda t: tuple(v for v in t.split(",") if v), default=None,
                        help="init suite: SI solvers to time, comma-separated, e.g. exact,auto (default auto)")
    parser.add_argument("--tltorch-layers", type=int, default=None,
                        help="init suite: distinct layer shapes per model to time tltorch's from_conv on "
                             "(default 3; 0 skips it)")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"),
                        help="train suite: autocast dtype (default none)")
    parser.add_argument("--compile", default=None, choices=("default", "reduce-overhead", "max-autotune"),
                        help="train suite: torch.compile mode of forward+loss+FD (default: eager)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, … (default: cuda if available, else cpu)")
    parser.add_argument("--ratios", type=_floats, default=None,
                        help="parameter ratios, comma-separated (default 0.1,0.25,0.5; --quick: 0.1)")
    parser.add_argument("--batch-sizes", type=_ints, default=None,
                        help="batch sizes, comma-separated (default 32,128; --quick: 32)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 10; --quick: 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: on a shared CPU, multi-threaded small ops "
                             "stall waiting for busy cores; 0 keeps torch's own choice); recorded in the output")
    parser.add_argument("--quick", action="store_true",
                        help="3 conv shapes, ratio 0.1, batch 32, ResNet-32/20 only: a few minutes on a CPU")
    parser.add_argument("--out", default="runs/bench", help="output folder (default: runs/bench)")


def run(args: argparse.Namespace) -> int:
    import logging
    from dataclasses import replace
    from pathlib import Path

    import torch
    from tqdm.auto import tqdm

    from .._svd import SI_SOLVERS
    from ..bench import SUITES, Settings, report
    from ..bench import run as run_bench
    from ..bench.train import WORKLOADS
    from ..models import available_models

    settings = Settings.preset(args.quick)
    model_key = "train_models" if args.suite == "train" else "init_models"
    overrides = {"ratios": args.ratios, "batch_sizes": args.batch_sizes, "repeats": args.repeats,
                 model_key: args.models, "si_solvers": args.si_solvers, "tltorch_layers": args.tltorch_layers}
    settings = replace(
        settings,
        suites=SUITES if args.suite == "all" else (args.suite,),
        command=_command(args),
        amp=args.amp,
        compile=args.compile,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    if any(r <= 0 for r in settings.ratios) or any(b <= 0 for b in settings.batch_sizes) or settings.repeats < 1:
        raise ValueError(f"--ratios, --batch-sizes and --repeats must be positive, got ratios={settings.ratios}, "
                         f"batch_sizes={settings.batch_sizes}, repeats={settings.repeats}")
    known = WORKLOADS if args.suite == "train" else available_models()
    unknown = sorted(set(settings.train_models if args.suite == "train" else settings.init_models) - set(known))
    if unknown:
        raise ValueError(f"--models {','.join(unknown)} unknown; choose from {','.join(known)}")
    bad = sorted(set(settings.si_solvers) - set(SI_SOLVERS))
    if bad:
        raise ValueError(f"--si-solvers {','.join(bad)} unknown; choose from {','.join(SI_SOLVERS)}")
    if settings.tltorch_layers < 0:
        raise ValueError(f"--tltorch-layers must be ≥ 0, got {settings.tltorch_layers}")
    if args.threads < 0:
        raise ValueError(f"--threads must be ≥ 0 (0: torch's default), got {args.threads}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    log, threads = logging.getLogger("tdecomp"), torch.get_num_threads()
    level = log.level
    log.setLevel(logging.WARNING)  # factorize_model's per-model summaries would break the progress bar
    torch.set_num_threads(args.threads or threads)
    try:
        with tqdm(total=settings.steps(), desc="bench", unit="step") as bar:
            def progress(label: str) -> None:
                bar.set_postfix_str(label, refresh=False)
                bar.update()

            results = run_bench(settings, device, progress)
    finally:
        log.setLevel(level)
        torch.set_num_threads(threads)
    paths = report.write(results, Path(args.out))
    print(report.to_markdown({**results, "headline": report.headline(results)}).split("## Layers")[0])
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
