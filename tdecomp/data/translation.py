"""Sequence-to-sequence data and task: the embedded toy translation task and IWSLT'14 from disk.

**translation_toy** (embedded, CPU-scale). Sentences of the toy English-like language of
:mod:`tdecomp.data.text` are rendered into an invented SOV language with a fixed lexicon of
made-up words, so a model has to learn word translation, reordering and morphology:

- source ``the big dog -s not chase my cat quickly``
- target ``N(dog) A(big) ta D(the) ga N(cat) D(my) o ADV(quickly) V(chase) nai ru``

(N(·) etc. are the invented words): subject and object noun phrases become noun, adjectives in
reverse order, plural marker ``ta``, determiner and a case particle (``ga`` subject, ``o``
object); the verb moves to the end, negation becomes the suffix ``nai`` and the verb agrees
with a plural subject (``ru``) instead of a singular one (``-s``). Train and test sentences are
distinct and fixed by ``split_seed``; the lexicon is fixed for good.

**iwslt14** (paper scale): fairseq's ``prepare-iwslt14.sh`` output — tokenized, lower-cased,
BPE-segmented ``train.de``/``train.en``/``test.de``/``test.en`` under
``<data_dir>/iwslt14.tokenized.de-en`` — read from disk (no download).

:class:`Seq2SeqTask`: teacher-forced cross-entropy (optional label smoothing), token accuracy,
and ``test_bleu``: greedy decoding scored by sacrebleu's corpus BLEU on the tokenized text with
BPE joined (``tokenize="none"``, as fairseq reports IWSLT'14).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..tasks import Task
from .bundle import DataBundle
from .registry import register_dataset
from .text import (
    ADJECTIVES,
    ADVERBS,
    BOS,
    DETERMINERS,
    EOS,
    NOUNS,
    PAD,
    VERBS,
    Clause,
    NounPhrase,
    Vocab,
    find_files,
    render_source,
    sample_clauses,
)

LEXICON_SEED = 2021
SUBJECT, OBJECT, TARGET_PLURAL, TARGET_NEGATION, PLURAL_AGREEMENT = "ga", "o", "ta", "nai", "ru"


def invented_lexicon(seed: int = LEXICON_SEED) -> dict[str, str]:
    """Every toy source word → a distinct made-up word of 2–3 consonant-vowel syllables."""
    rng = random.Random(seed)
    words = DETERMINERS + ADJECTIVES + NOUNS + VERBS + ADVERBS
    made: dict[str, None] = {}
    while len(made) < len(words):
        made.setdefault("".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou")
                                for _ in range(rng.choice((2, 3)))), None)
    return dict(zip(words, made))


def render_target(clause: Clause, lexicon: dict[str, str]) -> list[str]:
    """The SOV rendering described in the module docstring."""

    def phrase(np: NounPhrase, case: str) -> list[str]:
        return ([lexicon[np.noun], *(lexicon[a] for a in reversed(np.adjectives))]
                + ([TARGET_PLURAL] if np.plural else []) + [lexicon[np.determiner], case])

    return [*phrase(clause.subject, SUBJECT), *(phrase(clause.obj, OBJECT) if clause.obj else []),
            *([lexicon[clause.adverb]] if clause.adverb else []), lexicon[clause.verb],
            *([TARGET_NEGATION] if clause.negated else []),
            *([PLURAL_AGREEMENT] if clause.subject.plural else [])]


def toy_pairs(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``n`` (source, target) pairs with distinct sources, deterministic in ``seed``."""
    lexicon, pairs = invented_lexicon(), {}
    stream = seed
    while len(pairs) < n:
        for clause in sample_clauses(n, stream):
            pairs.setdefault(tuple(render_source(clause)), render_target(clause, lexicon))
        stream += 1_000_003
    return [(list(s), t) for s, t in list(pairs.items())[:n]]


# ---------------------------------------------------------------------------------- dataset
class PairDataset(Dataset):
    """Id sequences ``(src (S,), tgt (T,), reference)``: ``src`` ends with ``<eos>``; ``tgt``
    is the bare target (collation adds ``<bos>``/``<eos>``); ``reference`` its text for BLEU."""

    def __init__(self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]], src_vocab: Vocab,
                 tgt_vocab: Vocab, bpe: str) -> None:
        self.items = [
            (torch.tensor([*src_vocab.encode(s), EOS]), torch.tensor(tgt_vocab.encode(t)), detokenize(t, bpe))
            for s, t in pairs
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, str]:
        return self.items[i]

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(source, target) tokens per example as the model sees them (``<eos>`` / ``<bos>`` included),
        for batches by token count (:class:`~tdecomp.data.token_batches.TokenBatchSampler`)."""
        return [(len(src), len(tgt) + 1) for src, tgt, _ in self.items]


def collate_pairs(batch: list[tuple[Tensor, Tensor, str]]) -> dict[str, Any]:
    """``src`` (N, S), ``tgt_in`` = <bos> y (N, T+1), ``tgt_out`` = y <eos> (N, T+1), padded
    with ``<pad>``; ``refs``: the reference strings."""
    src, tgt, refs = zip(*batch)
    bos, eos = torch.tensor([BOS]), torch.tensor([EOS])

    def pad(seqs: Iterable[Tensor]) -> Tensor:
        return nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=PAD)

    return {"src": pad(src), "tgt_in": pad(torch.cat([bos, t]) for t in tgt),
            "tgt_out": pad(torch.cat([t, eos]) for t in tgt), "refs": list(refs)}


def detokenize(tokens: Sequence[str], bpe: str) -> str:
    """Tokens joined by spaces, BPE continuation markers ``bpe`` (e.g. ``"@@ "``) removed."""
    text = " ".join(tokens)
    return text.replace(bpe, "") if bpe else text


# ---------------------------------------------------------------------------------- task
@torch.no_grad()
def greedy_decode(model: nn.Module, src: Tensor, max_len: int) -> Tensor:
    """Greedy output ids (N, ≤ max_len) of a model with ``encode(src)`` and ``decode(tgt_in, …)``
    (:class:`tdecomp.models.transformer.Seq2SeqTransformer`); stops when every row has ``<eos>``."""
    memory, padding = model.encode(src)
    ys = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        step = model.decode(ys, memory, padding)[:, -1].argmax(-1)
        step = torch.where(done, torch.full_like(step, PAD), step)
        ys = torch.cat([ys, step[:, None]], dim=1)
        done |= step == EOS
        if done.all():
            break
    return ys[:, 1:]


class Seq2SeqTask(Task):
    """Translation on :func:`collate_pairs` batches; the model maps (src, tgt_in) → logits (N, T, V).

    Args:
        tgt_vocab: decodes hypotheses for BLEU.
        label_smoothing: ε of the training loss (test loss is plain cross-entropy).
        bpe: BPE continuation marker removed before scoring (``""``: none).
        bleu: decode and score BLEU at every evaluation.
        max_positions: cap of the decoded length (the model's positional table).

    Counts are target tokens (``<eos>`` included, padding excluded); ``test_acc`` is
    teacher-forced token accuracy; ``test_bleu`` uses greedy decoding of at most 1.5·S + 10 tokens.
    """

    metric = "bleu"

    def __init__(self, tgt_vocab: Vocab, label_smoothing: float = 0.0, bpe: str = "", bleu: bool = True,
                 max_positions: int = 256) -> None:
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.tgt_vocab, self.label_smoothing, self.bpe = tgt_vocab, label_smoothing, bpe
        self.bleu, self.max_positions = bleu, max_positions

    def _loss(self, logits: Tensor, target: Tensor, smoothing: float) -> tuple[Tensor, float, float]:
        keep = target != PAD
        loss = F.cross_entropy(logits[keep].float(), target[keep], label_smoothing=smoothing)
        return loss, float((logits[keep].argmax(-1) == target[keep]).sum()), float(keep.sum())

    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        loss, correct, count = self._loss(model(batch["src"], batch["tgt_in"]), batch["tgt_out"],
                                          self.label_smoothing)
        return loss, {"loss_sum": float(loss.detach()) * count, "correct": correct, "count": count}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        import sacrebleu

        loss_sum = correct = count = 0.0
        hypotheses, references = [], []
        for batch in batches:
            loss, c, n = self._loss(model(batch["src"], batch["tgt_in"]), batch["tgt_out"], 0.0)
            loss_sum, correct, count = loss_sum + float(loss) * n, correct + c, count + n
            if self.bleu:
                max_len = min(int(1.5 * batch["src"].shape[1]) + 10, self.max_positions - 1)
                for ids in greedy_decode(model, batch["src"], max_len).tolist():
                    hypotheses.append(detokenize(self.tgt_vocab.decode(ids), self.bpe))
                references += batch["refs"]
        metrics = {"test_loss": loss_sum / max(count, 1.0), "test_acc": correct / max(count, 1.0)}
        if self.bleu:
            metrics["test_bleu"] = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score
        return metrics


def _bundle(train: list, test: list, label_smoothing: float, bpe: str, bleu: bool,
            min_freq: int = 1) -> DataBundle:
    src_vocab = Vocab.build((s for s, _ in train), min_freq)
    tgt_vocab = Vocab.build((t for _, t in train), min_freq)
    return DataBundle(
        train=PairDataset(train, src_vocab, tgt_vocab, bpe),
        test=PairDataset(test, src_vocab, tgt_vocab, bpe),
        task=Seq2SeqTask(tgt_vocab, label_smoothing, bpe, bleu),
        model_kwargs={"src_vocab": len(src_vocab), "tgt_vocab": len(tgt_vocab)},
        collate_fn=collate_pairs,
    )


@register_dataset("translation_toy")
def translation_toy(n_train: int = 10000, n_test: int = 500, split_seed: int = 0,
                    label_smoothing: float = 0.1, bleu: bool = True, **_: Any) -> DataBundle:
    """The embedded toy translation task (module docstring): distinct train/test sources."""
    pairs = toy_pairs(n_train + n_test, split_seed)
    return _bundle(pairs[:n_train], pairs[n_train:], label_smoothing, "", bleu)


@register_dataset("iwslt14")
def iwslt14(root: str = "data", iwslt_dir: str = "iwslt14.tokenized.de-en", src_lang: str = "de",
            tgt_lang: str = "en", max_len: int = 250, min_freq: int = 1,
            label_smoothing: float = 0.1, bpe: str = "@@ ", bleu: bool = True, **_: Any) -> DataBundle:
    """IWSLT'14 from ``<root>/<iwslt_dir>/{train,test}.{src_lang,tgt_lang}`` (fairseq's prepared,
    BPE-segmented text, one sentence per line). Training pairs longer than ``max_len`` tokens
    are dropped, test sources cut to it; references are the full BPE-joined test targets."""
    names = [f"{split}.{lang}" for split in ("train", "test") for lang in (src_lang, tgt_lang)]
    paths = find_files(Path(root) / iwslt_dir, names, "iwslt14")
    train_src, train_tgt, test_src, test_tgt = (_read_parallel(p) for p in paths)
    for (a, b), (pa, pb) in zip(((train_src, train_tgt), (test_src, test_tgt)), (paths[:2], paths[2:])):
        if len(a) != len(b):
            raise ValueError(f"iwslt14: {pa} has {len(a)} lines but {pb} has {len(b)}; parallel files must align")
    train = [(s, t) for s, t in zip(train_src, train_tgt) if 0 < len(s) <= max_len and 0 < len(t) <= max_len]
    test = [(s[:max_len], t) for s, t in zip(test_src, test_tgt)]
    return _bundle(train, test, label_smoothing, bpe, bleu, min_freq)


def _read_parallel(path: Path) -> list[list[str]]:
    """Every line's tokens, empty lines kept so that parallel files stay aligned."""
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
