"""Transformers, toy/IWSLT/text data, seq2seq and masked-LM tasks, attention surgery end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

import tdecomp
from tdecomp.config import TrainConfig
from tdecomp.data import create as create_data
from tdecomp.data.text import BOS, EOS, IGNORE, MASK, PAD, Clause, MaskedLMDataset, NounPhrase, toy_sentences
from tdecomp.data.translation import collate_pairs, greedy_decode, invented_lexicon, render_target, toy_pairs
from tdecomp.layers.attention import FactorizedMultiheadAttention
from tdecomp.models import create as create_model
from tdecomp.train import train
from tests.helpers import assert_rel_close

TINY = {"d_model": 16, "heads": 2, "ffn_dim": 32, "encoder_layers": 1, "decoder_layers": 2, "dropout": 0.0}


def _seq2seq(src_vocab: int = 11, tgt_vocab: int = 13):
    return create_model("transformer_small", src_vocab=src_vocab, tgt_vocab=tgt_vocab, **TINY).double().eval()


def _batch(n: int = 3, s: int = 6, t: int = 5):
    src = torch.randint(5, 11, (n, s))
    src[0, -2:] = PAD
    tgt_in = torch.cat([torch.full((n, 1), BOS), torch.randint(5, 13, (n, t - 1))], 1)
    return src, tgt_in


def test_seq2seq_is_causal_and_ignores_source_padding():
    model = _seq2seq()
    src, tgt_in = _batch()
    logits = model(src, tgt_in)
    assert logits.shape == (3, 5, 13)
    changed = tgt_in.clone()
    changed[:, 3:] = 7  # future tokens must not change earlier predictions
    assert_rel_close(model(src, changed)[:, :3], logits[:, :3], 1e-12)
    padded = torch.cat([src, torch.full((3, 2), PAD)], 1)  # more padding must not change anything
    assert_rel_close(model(padded, tgt_in), logits, 1e-12)


@pytest.mark.parametrize("family", ["lowrank", "tucker"])
def test_full_rank_attention_surgery_keeps_the_model_function(family):
    model = _seq2seq()
    src, tgt_in = _batch()
    want = model(src, tgt_in)
    rank = 8 if family == "lowrank" else (16, 16)  # d_h = 8; Tucker at full ranks
    tdecomp.factorize_model(model, family, rank, targets=("attention",), progress=False)
    attention = [m for m in model.modules() if isinstance(m, FactorizedMultiheadAttention)]
    assert len(attention) == 1 + 2 * 2  # encoder self, decoder self + cross
    assert type(model.decoder[0].ffn[0]) is torch.nn.Linear  # feed-forward left dense
    assert_rel_close(model(src, tgt_in), want, 1e-10)


def test_greedy_decode_agrees_with_teacher_forcing():
    model = _seq2seq()
    src, _ = _batch()
    out = greedy_decode(model, src, 7)
    assert out.shape[0] == 3 and out.shape[1] <= 7
    tgt_in = torch.cat([torch.full((3, 1), BOS), out[:, :-1]], 1)
    forced = model(src, tgt_in).argmax(-1)
    for row, pred in zip(out, forced):  # up to and including the first <eos>
        n = int((row == EOS).nonzero()[0]) + 1 if (row == EOS).any() else len(row)
        assert torch.equal(row[:n], pred[:n])


def test_toy_translation_rules_on_a_hand_written_clause():
    lex = invented_lexicon()
    clause = Clause(NounPhrase("the", ("big", "red"), "dog", True), "chase",
                    NounPhrase("my", (), "cat", False), "quickly", True)
    want = [lex["dog"], lex["red"], lex["big"], "ta", lex["the"], "ga", lex["cat"], lex["my"], "o",
            lex["quickly"], lex["chase"], "nai", "ru"]
    assert render_target(clause, lex) == want
    assert len(set(lex.values())) == len(lex)


def test_toy_data_is_deterministic_and_splits_are_disjoint():
    assert toy_pairs(50, 3) == toy_pairs(50, 3) != toy_pairs(50, 4)
    bundle = create_data("translation_toy", n_train=300, n_test=40)
    train_src = {tuple(s.tolist()) for s, _, _ in bundle.train}
    assert not train_src & {tuple(s.tolist()) for s, _, _ in bundle.test}
    batch = collate_pairs([bundle.train[i] for i in range(4)])
    assert torch.equal(batch["tgt_in"][:, 1:][batch["tgt_out"][:, 1:] != PAD],
                       batch["tgt_out"][:, :-1][batch["tgt_out"][:, 1:] != PAD])  # shifted by one
    assert (batch["tgt_in"][:, 0] == BOS).all() and len(batch["refs"]) == 4
    assert len(toy_sentences(100, 0)) == len({tuple(s) for s in toy_sentences(100, 0)}) == 100


def test_bert_masking_statistics_and_fixed_test_masks():
    seqs = [list(range(5, 45))] * 200
    train_set = MaskedLMDataset(seqs, 50)
    inputs, labels = zip(*(train_set[i] for i in range(200)))
    inputs, labels = torch.stack(inputs), torch.stack(labels)
    chosen = labels != IGNORE
    original = torch.tensor(seqs)
    assert chosen.float().mean().item() == pytest.approx(0.15 + 0.85 / 40, abs=0.02)
    assert torch.equal(labels[chosen], original[chosen])
    assert torch.equal(inputs[~chosen], original[~chosen])
    assert (inputs[chosen] == MASK).float().mean().item() == pytest.approx(0.8, abs=0.05)
    fixed = MaskedLMDataset(seqs[:5], 50, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(fixed[2], fixed[2]))


def train_steps(model, task, batch, steps: int = 15) -> tuple[list[float], dict[str, float]]:
    """Adam on one batch with FD in the loss; the task losses and the last step's stats."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss, stats = task.training_step(model, batch)
        (loss + 0.5 * 1e-4 * tdecomp.frobenius_decay(model)).backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return losses, stats


def test_mlm_task_perplexity_and_training_steps_lower_the_loss():
    bundle = create_data("mlm_toy", n_train=64, n_test=16)
    model = create_model("bert_small", **bundle.model_kwargs, d_model=16, heads=2, ffn_dim=32, layers=1, dropout=0.0)
    tdecomp.factorize_model(model, "lowrank", 2, targets=("attention",), progress=False)
    batch = bundle.collate_fn([bundle.test[i] for i in range(16)])
    losses, stats = train_steps(model, bundle.task, batch)
    assert losses[-1] < 0.7 * losses[0]
    metrics = bundle.task.evaluate(model, [batch])
    assert metrics["test_ppl"] == pytest.approx(math.exp(metrics["test_loss"]))
    assert stats["count"] == float((batch[1] != IGNORE).sum())


@pytest.mark.parametrize("family", ["lowrank", "tucker"])
def test_seq2seq_training_steps_lower_the_loss(family):
    bundle = create_data("translation_toy", n_train=64, n_test=8)
    model = create_model("transformer_small", **bundle.model_kwargs, **TINY)
    rank = 2 if family == "lowrank" else (8, 4)
    tdecomp.factorize_model(model, family, rank, targets=("attention",), progress=False)
    batch = collate_pairs([bundle.train[i] for i in range(32)])
    losses, _ = train_steps(model, bundle.task, batch)
    assert losses[-1] < 0.7 * losses[0]


def test_iwslt14_and_text_loaders_read_disk_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"iwslt14\.tokenized\.de-en lacks train\.de.*expected the files"):
        create_data("iwslt14", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="text lacks train.txt, test.txt"):
        create_data("mlm_text", root=str(tmp_path))
    folder = tmp_path / "iwslt14.tokenized.de-en"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}.de").write_text("ein hund@@ e\n\nzwei katzen\n")
        (folder / f"{split}.en").write_text("a dog@@ s\nnothing\ntwo cats\n")
    bundle = create_data("iwslt14", root=str(tmp_path))
    assert len(bundle.train) == 2 and len(bundle.test) == 3  # the empty training source is dropped
    assert [bundle.test[i][2] for i in range(3)] == ["a dogs", "nothing", "two cats"]  # BPE joined
    (folder / "test.en").write_text("one line\n")
    with pytest.raises(ValueError, match="parallel files must align"):
        create_data("iwslt14", root=str(tmp_path))
    text = tmp_path / "text"
    text.mkdir()
    (text / "train.txt").write_text("a b c a\nb c\n")
    (text / "test.txt").write_text("a d\n")
    bundle = create_data("mlm_text", root=str(tmp_path), max_len=3)
    assert len(bundle.train) == 3 and bundle.model_kwargs == {"vocab_size": 5 + 3}


def test_trainer_runs_translation_with_factorized_attention(tmp_path):
    config = TrainConfig(
        model="transformer_small", model_kwargs=TINY, data="translation_toy",
        data_kwargs={"n_train": 128, "n_test": 16}, family="lowrank", rank=0.5, targets=["attention"],
        reg="fd", optimizer="adamw", lr=3e-3, epochs=2, batch_size=32, device="cpu", progress=False,
        out=str(tmp_path / "run"),
    )
    summary = train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert 0.0 <= summary["test_bleu"] <= 100.0
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert summary["factorized_layer_ratio"] == pytest.approx(0.5, rel=0.05)
