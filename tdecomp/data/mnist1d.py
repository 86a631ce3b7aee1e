"""MNIST-1D (Greydanus & Kobak, 2020): ten 1-D digit templates, procedurally padded, translated,
scaled, sheared and noised into length-40 signals; generated offline and cached as ``.npz``.

The ``mnist1d`` package generates the data with ``make_dataset(get_dataset_args())``; its
``get_dataset`` would download the reference pickle, so it is never called here.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..tasks import ClassificationTask
from .bundle import DataBundle
from .registry import register_dataset

# 12,000 signals → 9,600 train / 2,400 test at the package's 80/20 split: ≥ 2,000 test signals,
# so one test signal is ≤ 0.05 percentage points.
NUM_SAMPLES = 12_000
GENERATION_SEED = 42  # the package's default: the published MNIST-1D draw
LENGTH = 40  # the package's final_seq_length


def cache_path(root: str | Path, num_samples: int, generation_seed: int) -> Path:
    """Where the generated arrays of one (``num_samples``, ``generation_seed``) draw are cached."""
    return Path(root) / "mnist1d" / f"mnist1d_n{num_samples}_seed{generation_seed}.npz"


def generate(num_samples: int = NUM_SAMPLES, generation_seed: int = GENERATION_SEED) -> dict[str, np.ndarray]:
    """``{"x": (0.8·n, 40), "y": (0.8·n,), "x_test": (0.2·n, 40), "y_test": (0.2·n,)}`` from the
    package's generator (standardized over the whole draw, shuffled, classes balanced).

    ``make_dataset`` reseeds Python's and NumPy's global generators; their states are restored so
    that generating data does not change a run's other random draws.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, generation_seed
    states = random.getstate(), np.random.get_state()
    try:
        drawn = make_dataset(args)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    return {key: np.asarray(drawn[key]) for key in ("x", "y", "x_test", "y_test")}


def load(
    root: str | Path, num_samples: int = NUM_SAMPLES, generation_seed: int = GENERATION_SEED
) -> dict[str, np.ndarray]:
    """The cached draw, generated and written (atomically: parallel workers may race) if absent."""
    path = cache_path(root, num_samples, generation_seed)
    if not path.is_file():
        arrays = generate(num_samples, generation_seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, **arrays)
        os.replace(partial, path)
    with np.load(path) as cached:
        return {key: cached[key] for key in cached.files}


@register_dataset("mnist1d")
def mnist1d(
    root: str = "data",
    num_samples: int = NUM_SAMPLES,
    generation_seed: int = GENERATION_SEED,
    **_: Any,
) -> DataBundle:
    """Signals (1, 40), 10 balanced classes; ``num_samples`` split 80/20 into train/test.

    The draw depends only on ``num_samples`` and ``generation_seed`` (not the training ``seed``),
    so every run of a sweep sees the same signals (a ``subset`` of them is resampled per seed).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 50:
        raise ValueError(f"data_kwargs.num_samples must be an int ≥ 50 (5 per class and split), got {num_samples!r}")
    arrays = load(root, num_samples, generation_seed)

    def to_dataset(signals: np.ndarray, labels: np.ndarray) -> TensorDataset:
        x = torch.as_tensor(signals, dtype=torch.float32).unsqueeze(1)
        return TensorDataset(x, torch.as_tensor(labels, dtype=torch.long))

    return DataBundle(
        train=to_dataset(arrays["x"], arrays["y"]),
        test=to_dataset(arrays["x_test"], arrays["y_test"]),
        task=ClassificationTask(),
        model_kwargs={"num_classes": 10, "in_channels": 1, "length": LENGTH},
    )
