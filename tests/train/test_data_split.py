"""Validation split (``val_fraction``, ``split_seed``) and per-seed training subsets (``subset``)."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from tdecomp import data
from tdecomp.config import TrainConfig, load_config
from tdecomp.data.subset import class_labels, stratified_draw
from tdecomp.train import Trainer

N_DIGITS_TRAIN = 1437  # sklearn digits: 1,797 images, 20% (360) held out as test


def rows(dataset) -> list[tuple]:
    """Every example of ``dataset`` as a hashable (input bytes, label) pair."""
    return [(x.numpy().tobytes(), int(y)) for x, y in (dataset[i] for i in range(len(dataset)))]


def labels_of(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


def assert_stratified(part: list[int], whole: list[int], count: int) -> None:
    """Each class holds ⌊count·n_c/n⌋ or ⌈count·n_c/n⌉ of ``part``, n_c its size in ``whole``."""
    assert len(part) == count
    have, sizes = Counter(part), Counter(whole)
    for c, n_c in sizes.items():
        quota = count * n_c / len(whole)
        assert math.floor(quota) <= have[c] <= math.ceil(quota), (c, have[c], quota)


def test_validation_split_is_stratified_disjoint_and_completes_the_training_set():
    full = data.create("digits")
    bundle = data.create("digits", val_fraction=0.2, val_seed=0)
    n_val = round(0.2 * N_DIGITS_TRAIN)
    assert len(full.train) == N_DIGITS_TRAIN and len(bundle.val) == n_val
    assert len(bundle.train) == N_DIGITS_TRAIN - n_val
    assert_stratified(labels_of(bundle.val), labels_of(full.train), n_val)
    train_rows, val_rows = rows(bundle.train), rows(bundle.val)
    assert not set(train_rows) & set(val_rows)  # digits has no duplicate image+label
    assert Counter(train_rows + val_rows) == Counter(rows(full.train))  # train + val = the training set
    assert rows(bundle.test) == rows(full.test)  # the test set is not touched


def test_validation_split_follows_split_seed_not_the_run_seed():
    def val_rows(seed: int, val_seed: int) -> set:
        return set(rows(data.create("digits", seed=seed, val_fraction=0.1, val_seed=val_seed).val))

    assert val_rows(seed=0, val_seed=0) == val_rows(seed=5, val_seed=0)
    assert val_rows(seed=0, val_seed=0) != val_rows(seed=0, val_seed=1)


def test_subset_is_resampled_per_seed_stratified_and_drawn_from_the_training_part():
    def subset(seed: int, val_fraction: float = 0.0):
        return data.create("digits", seed=seed, subset=200, val_fraction=val_fraction)

    full = labels_of(data.create("digits").train)
    a, b, again = rows(subset(0).train), rows(subset(1).train), rows(subset(0).train)
    assert a == again and set(a) != set(b)
    assert_stratified([y for _, y in a], full, 200)
    split = subset(3, val_fraction=0.25)
    train_part = set(rows(split.train))
    assert len(train_part) == 200 and not train_part & set(rows(split.val))
    remaining = data.create("digits", val_fraction=0.25)  # the part the subset is drawn from
    assert train_part <= set(rows(remaining.train))
    assert_stratified([y for _, y in train_part], labels_of(remaining.train), 200)


def test_neither_split_nor_subset_leaves_the_training_dataset_as_it_is():
    bundle = data.create("digits", subset=N_DIGITS_TRAIN)
    assert isinstance(bundle.train, TensorDataset) and bundle.val is None


@pytest.mark.parametrize("count", [1, 7, 10, 33, 100])
def test_stratified_draw_meets_every_class_quota_and_the_total(count):
    labels = np.repeat(np.arange(4), [50, 30, 13, 7])  # n = 100, unequal classes
    for seed in range(5):
        chosen = stratified_draw(labels, 100, count, np.random.default_rng(seed))
        assert len(set(chosen.tolist())) == count and list(chosen) == sorted(chosen)
        assert_stratified(labels[chosen].tolist(), labels.tolist(), count)


def test_uniform_split_without_class_labels():
    """Translation examples are no (input, class) pairs: a uniform split, and a subset keeps token sizes."""
    bundle = data.create("translation_toy", n_train=60, n_test=5, val_fraction=0.25, subset=20, seed=2)
    assert class_labels(bundle.train) is None
    assert len(bundle.val) == 15 and len(bundle.train) == 20
    assert not set(bundle.train.indices) & set(bundle.val.indices)
    full = data.create("translation_toy", n_train=60, n_test=5)
    assert bundle.train.sizes == [full.train.sizes[i] for i in bundle.train.indices]


class Pairs(Dataset):
    """(input, label) items with no label attribute: read by iterating; draws from torch's RNG on access."""

    def __init__(self, labels: list) -> None:
        self.labels_list = labels

    def __len__(self) -> int:
        return len(self.labels_list)

    def __getitem__(self, i: int):
        return torch.rand(2), self.labels_list[i]


def test_class_labels_read_stored_labels_or_iterate_without_touching_the_rng():
    y = torch.tensor([3, 1, 2, 1])
    tensors = TensorDataset(torch.zeros(4, 2), y)
    assert class_labels(tensors).tolist() == [3, 1, 2, 1]
    assert class_labels(Subset(tensors, [2, 0])).tolist() == [2, 3]
    assert class_labels(TensorDataset(torch.zeros(4, 2), y.float())) is None  # regression targets
    state = torch.get_rng_state()
    assert class_labels(Pairs([0, torch.tensor(4), np.int64(2)])).tolist() == [0, 4, 2]
    assert torch.equal(torch.get_rng_state(), state)
    assert class_labels(Pairs([0, 1.5])) is None and class_labels(Pairs([True])) is None


def test_validation_reads_training_examples_without_augmentation(tmp_path):
    from tests.train.test_data_and_models import write_cifar

    write_cifar(tmp_path, 10, per_batch=8)
    bundle = data.create("cifar10", root=str(tmp_path), val_fraction=0.25)
    first, second = bundle.val[0][0], bundle.val[0][1]
    assert torch.equal(bundle.val[0][0], first) and bundle.val[0][1] == second  # no random crop/flip
    index = bundle.val.indices[0]
    augmented = {bundle.train.dataset[index][0].numpy().tobytes() for _ in range(20)}
    assert len(augmented) > 1  # the training view of the same image is augmented


def test_masked_lm_validation_masks_are_fixed():
    bundle = data.create("mlm_toy", n_train=40, n_test=8, val_fraction=0.2)
    assert len(bundle.val) == 8
    for i in range(len(bundle.val)):
        assert all(torch.equal(a, b) for a, b in zip(bundle.val[i], bundle.val[i]))


@pytest.mark.parametrize("key,value", [("val_fraction", 1.0), ("val_fraction", -0.1), ("val_fraction", True),
                                       ("val_fraction", "0.1"), ("split_seed", -1), ("split_seed", 1.5),
                                       ("split_seed", True), ("seed", -1)])
def test_bad_split_settings_are_rejected_in_one_line(key, value):
    with pytest.raises(ValueError, match=f"^{key} must be") as err:
        TrainConfig(**{key: value})
    assert "\n" not in str(err.value)


def test_a_split_that_leaves_a_part_empty_is_rejected():
    with pytest.raises(ValueError, match="val_fraction=0.0003 of 1437 training examples leaves 0 for validation"):
        data.create("digits", val_fraction=0.0003)
    with pytest.raises(ValueError, match="leaves 10 for validation and 0 for training"):
        data.create("translation_toy", n_train=10, n_test=2, val_fraction=0.99)


def test_old_run_configs_without_the_new_keys_still_compare():
    saved = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("val_fraction", "split_seed")}
    assert TrainConfig().conflicts(saved) == []
    assert TrainConfig(val_fraction=0.1).conflicts(saved) == ["val_fraction"]


def test_trainer_evaluates_the_validation_split_every_epoch(tmp_path):
    cfg = load_config(None, dict(model="mlp", data="digits", subset=300, val_fraction=0.2, split_seed=4,
                                 batch_size=64, epochs=2, progress=False, out=str(tmp_path / "run")))
    trainer = Trainer(cfg)
    summary = trainer.fit()
    x, y = (torch.stack(t) for t in zip(*(trainer.data.val[i] for i in range(len(trainer.data.val)))))
    trainer.model.eval()
    with torch.no_grad():  # the final model evaluated by hand on the validation examples
        logits = trainer.model(x)
    assert summary["val_acc"] * len(y) == pytest.approx(int((logits.argmax(1) == y).sum()), abs=1e-9)
    assert summary["val_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)
    assert len(trainer.data.val) == round(0.2 * N_DIGITS_TRAIN) and len(trainer.data.train) == 300
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all({"val_loss", "val_acc", "test_loss", "test_acc"} <= set(r) for r in records) and len(records) == 2
    best = max(records, key=lambda r: r["val_acc"])
    assert (summary["best_val_acc"], summary["best_val_epoch"]) == (best["val_acc"], best["epoch"])
