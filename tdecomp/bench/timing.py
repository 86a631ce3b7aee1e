"""Timing machinery: interleaved repeats, median and interquartile range, run metadata.

Candidates are timed round-robin (one call of each per round, in a fresh random order each
round) rather than one after another, so slow drifts of a shared machine (other processes,
thermal state) and cache/allocator effects of the previous call hit all of them alike; ratios to
a reference are taken within each round and their median reported.
"""

from __future__ import annotations

import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Stats:
    """Median and quartiles of a sample of times, in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int

    @classmethod
    def of(cls, seconds: list[float]) -> Stats:
        ms = sorted(1e3 * s for s in seconds)
        if len(ms) == 1:
            return cls(ms[0], ms[0], ms[0], 1)
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
        return cls(statistics.median(ms), q1, q3, len(ms))

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock time covers them (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate: ``warmup`` untimed rounds, then ``repeats`` timed rounds.

    Round r calls every candidate once, in an order shuffled by a generator seeded with ``seed``;
    times are wall clock with device synchronization before and after each call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got repeats={repeats}, warmup={warmup}")
    times: dict[str, list[float]] = {name: [] for name in candidates}
    rng = random.Random(seed)
    for round_ in range(warmup + repeats):
        for name in rng.sample(list(candidates), len(candidates)):
            synchronize(device)
            start = time.perf_counter()
            candidates[name]()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of time / reference time (both from :func:`time_interleaved`)."""
    return statistics.median(t / r for t, r in zip(times, reference))


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (for expensive one-off work such as initialization)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def environment(device: torch.device) -> dict[str, object]:
    """What the numbers depend on: versions, threads, processor, device."""
    import tensorly
    import tltorch

    info: dict[str, object] = {
        "torch": torch.__version__,
        "tensorly": tensorly.__version__,
        "tltorch": getattr(tltorch, "__version__", "unknown"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
