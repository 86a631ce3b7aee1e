"""Helpers of ``benchmarks/gpu_check.sh``: time whole-model SI, and print issue 11's targets table
from the ``tdecomp bench --suite train`` outputs (works on CPU outputs too, for the CPU targets).

    python benchmarks/gpu_targets.py si --out si.json [--model wrn28_10] [--ratio 0.0667] [--device cuda]
    python benchmarks/gpu_targets.py table --dir runs/gpu_check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tdecomp import factorize_model, models
from tdecomp.bench.report import TRACKER_OVERHEAD, train_target
from tdecomp.layers.registry import FAMILIES

SI_BOUND_S = 30.0


def time_si(model: str, ratio: float, device: str) -> dict[str, float]:
    """Seconds of ``factorize_model`` (budget + SI of every layer) per family, model on ``device``."""
    out = {}
    for family in FAMILIES.names():
        net = models.create(model, num_classes=10, in_channels=3).to(device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        tic = time.perf_counter()
        factorize_model(net, family, ratio, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out[family] = time.perf_counter() - tic
        print(f"SI {model} {family}: {out[family]:.1f} s", flush=True)
    return out


def table(folder: Path) -> None:
    rows = [("target", "measured", "bound", "met")]
    for bench in sorted(folder.glob("*/bench.json")):
        results = json.loads(bench.read_text())
        device = results["environment"]["device"]
        for r in results.get("train", []):
            bound = train_target(r["model"], r["family"], device)
            label = f"{r['model']} {r['family']} @{r['ratio']} step/dense ({r['compile']}, {device})"
            if bound is not None:
                rows.append((label, f"{r['vs_dense']:.2f}", f"≤ {bound}", "✓" if r["vs_dense"] <= bound else "✗"))
            if r["compile"] == "eager":
                rows.append((f"{r['model']} {r['family']} tracker every {r['track_every']}",
                             f"{100 * r['tracker_overhead']:.1f}%", f"≤ {100 * TRACKER_OVERHEAD:.0f}%",
                             "✓" if r["tracker_overhead"] <= TRACKER_OVERHEAD else "✗"))
    si = folder / "si.json"
    if si.exists():
        for family, seconds in json.loads(si.read_text()).items():
            rows.append((f"SI whole WRN-28-10 {family}", f"{seconds:.1f} s", f"≤ {SI_BOUND_S:.0f} s",
                         "✓" if seconds <= SI_BOUND_S else "✗"))
    for metrics in sorted(folder.glob("*/metrics.jsonl")):
        record = json.loads(metrics.read_text().splitlines()[-1])
        rows.append((f"{metrics.parent.name}: trains (finite loss)", f"{record['train_loss']:.3f}", "finite", "✓"))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for k, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, width)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in width) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("si", "table"))
    parser.add_argument("--out", type=Path, default=Path("si.json"))
    parser.add_argument("--dir", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--model", default="wrn28_10")
    parser.add_argument("--ratio", type=float, default=0.0667)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.what == "si":
        args.out.write_text(json.dumps(time_si(args.model, args.ratio, args.device), indent=1) + "\n")
    else:
        table(args.dir)


if __name__ == "__main__":
    main()
