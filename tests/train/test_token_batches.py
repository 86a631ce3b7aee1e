"""Batches by token count against fairseq's ``_make_batches`` / ``shuffled_batches_by_size``
(microsoft/fnl_paper Transformer-PyTorch/fairseq/data.py:293-383) rewritten here."""

from __future__ import annotations

import numpy as np
import pytest

from tdecomp.config import load_config
from tdecomp.data.token_batches import TokenBatchSampler, token_batches
from tdecomp.train import Trainer


def _official_make_batches(src, dst, indices, max_tokens):
    """data.py:293-337 with max_sentences = ∞, allow_different_src_lens=True, every size valid."""
    batch, batches = [], []

    def yield_batch(next_idx, num_tokens):
        if len(batch) == 0:
            return False
        if num_tokens > max_tokens:
            return True
        return False

    sample_len = 0
    for idx in map(int, indices):
        src_size, dst_size = src[idx], dst[idx]
        sample_len = max(sample_len, src_size, dst_size)
        num_tokens = (len(batch) + 1) * sample_len
        if yield_batch(idx, num_tokens):
            batches.append(batch)
            batch = []
            sample_len = max(src_size, dst_size)
        batch.append(idx)
    if len(batch) > 0:
        batches.append(batch)
    return batches


def _sizes(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return list(zip(rng.integers(1, 60, n).tolist(), rng.integers(1, 60, n).tolist()))


def test_token_batches_are_fairseqs():
    sizes = _sizes()
    src, dst = [s for s, _ in sizes], [t for _, t in sizes]
    order = np.random.default_rng(1).permutation(len(sizes))
    order = order[np.argsort(np.asarray(dst)[order], kind="mergesort")]
    order = order[np.argsort(np.asarray(src)[order], kind="mergesort")]  # data.py:368-370
    for max_tokens in (50, 400, 4000):
        assert token_batches(sizes, max_tokens, order) == _official_make_batches(src, dst, order, max_tokens)


def test_sampler_covers_every_example_once_per_epoch_and_shards_evenly():
    sizes = _sizes()
    sampler = TokenBatchSampler(sizes, 400, seed=3)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
        for b in batches:  # padded size within the budget unless one example alone exceeds it
            assert len(b) * max(max(sizes[i]) for i in b) <= 400 or len(b) == 1
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    shards = [list(TokenBatchSampler(sizes, 400, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(sampler) // 3
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat))


def test_trainer_batches_by_tokens(tmp_path):
    cfg = load_config(None, dict(model="transformer_small_fairseq", data="translation_toy", subset=64,
                                 model_kwargs=dict(d_model=16, heads=2, ffn_dim=32, max_positions=64),
                                 data_kwargs=dict(n_train=64, n_test=8), max_tokens=120, progress=False,
                                 out=str(tmp_path / "run")))
    trainer = Trainer(cfg)
    assert isinstance(trainer.sampler, TokenBatchSampler)
    assert trainer.steps_per_epoch == len(trainer.sampler) > 64 * 8 // 120
    for batch in trainer.train_loader:
        tokens = max(batch["src"].shape[1], batch["tgt_in"].shape[1]) * batch["src"].shape[0]
        assert tokens <= 120 or batch["src"].shape[0] == 1
    with pytest.raises(ValueError, match="max_tokens"):
        load_config(None, dict(max_tokens=-1))
