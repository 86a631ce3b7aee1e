"""Text: vocabularies, the embedded toy language, and masked-LM data and task.

**The embedded corpus.** No installed package ships a usable text corpus offline (scikit-learn's
20 Newsgroups downloads; nltk is not a dependency), so the toy language is generated: a small
English-like grammar, ``DET ADJ* NOUN [-s] [not] VERB [-s] [DET ADJ* NOUN [-s]] [ADV]`` over a
fixed 100-word lexicon with number agreement (the verb takes ``-s`` after a singular subject).
Sentences are drawn from a seeded ``random.Random``, so every machine gets the same corpus.
:mod:`tdecomp.data.translation` renders the same sentences into a second, SOV language.

**Masked LM** (``mlm_toy`` on the toy language, ``mlm_text`` on a corpus on disk): BERT masking
(15% of the tokens are predicted; of those 80% become ``<mask>``, 10% a random token, 10% stay),
redrawn every time an example is read for training, fixed once (from ``split_seed``) for the
test set. :class:`MLMTask` reports the masked-token loss, accuracy and ``test_ppl`` = exp(loss).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..tasks import Task
from .bundle import DataBundle
from .registry import register_dataset

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<mask>")
PAD, BOS, EOS, UNK, MASK = range(len(SPECIALS))
IGNORE = -100  # label of positions that are not predicted (F.cross_entropy's ignore_index)


class Vocab:
    """Token ↔ id; ids 0–4 are ``<pad> <bos> <eos> <unk> <mask>``, then tokens by frequency."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1) -> Vocab:
        """Tokens seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
        counts = Counter(t for s in sentences for t in s)
        return cls(t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to the first ``<eos>``, special tokens dropped."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return out


# ---------------------------------------------------------------------------------- toy language
DETERMINERS = ("the", "this", "that", "my", "your", "our")
ADJECTIVES = ("big", "small", "red", "old", "new", "happy", "quick", "green", "blue", "tall",
              "dark", "bright", "young", "quiet", "heavy", "warm", "cold", "strange", "clever", "lazy")
NOUNS = ("dog", "cat", "bird", "man", "woman", "child", "teacher", "farmer", "king", "queen", "horse",
         "fish", "tree", "house", "river", "car", "book", "ship", "doctor", "friend", "girl", "boy",
         "lion", "mouse", "city", "garden", "student", "baker", "soldier", "singer")
VERBS = ("see", "like", "find", "follow", "help", "watch", "call", "carry", "know", "love", "meet",
         "push", "pull", "feed", "visit", "paint", "build", "hear", "chase", "teach")
ADVERBS = ("quickly", "slowly", "often", "today", "again", "quietly", "rarely", "gladly", "there", "now")
PLURAL, NEGATION = "-s", "not"


@dataclass(frozen=True)
class NounPhrase:
    determiner: str
    adjectives: tuple[str, ...]
    noun: str
    plural: bool


@dataclass(frozen=True)
class Clause:
    """One toy sentence before rendering: subject, verb, optional object/adverb, negation."""

    subject: NounPhrase
    verb: str
    obj: NounPhrase | None
    adverb: str | None
    negated: bool


def _noun_phrase(rng: random.Random) -> NounPhrase:
    adjectives = tuple(rng.sample(ADJECTIVES, rng.choice((0, 0, 1, 1, 2))))
    return NounPhrase(rng.choice(DETERMINERS), adjectives, rng.choice(NOUNS), rng.random() < 0.4)


def sample_clauses(n: int, seed: int) -> list[Clause]:
    """``n`` clauses drawn from the toy grammar with ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [
        Clause(_noun_phrase(rng), rng.choice(VERBS), _noun_phrase(rng) if rng.random() < 0.8 else None,
               rng.choice(ADVERBS) if rng.random() < 0.4 else None, rng.random() < 0.2)
        for _ in range(n)
    ]


def render_source(clause: Clause) -> list[str]:
    """English-like SVO surface form, e.g. ``the big dog -s not chase the cat quickly``."""

    def phrase(np: NounPhrase) -> list[str]:
        return [np.determiner, *np.adjectives, np.noun] + ([PLURAL] if np.plural else [])

    verb = [clause.verb] + ([] if clause.subject.plural else [PLURAL])  # 3rd person singular -s
    return [*phrase(clause.subject), *([NEGATION] if clause.negated else []), *verb,
            *(phrase(clause.obj) if clause.obj else []), *([clause.adverb] if clause.adverb else [])]


def toy_sentences(n: int, seed: int) -> list[list[str]]:
    """``n`` distinct toy-language sentences (tokens), deterministic in ``seed``."""
    seen: dict[tuple[str, ...], None] = {}
    stream = seed
    while len(seen) < n:
        for clause in sample_clauses(n, stream):
            seen.setdefault(tuple(render_source(clause)), None)
        stream += 1_000_003  # another stream if duplicates left us short
    return [list(s) for s in list(seen)[:n]]


# ---------------------------------------------------------------------------------- masked LM
class MaskedLMDataset(Dataset):
    """Token-id sequences → ``(input ids (L,), labels (L,))`` with BERT masking.

    ``seed=None`` redraws the masks on every access (training; uses torch's global RNG, which the
    trainer seeds); an int fixes them once (evaluation).
    """

    def __init__(self, sequences: Sequence[Sequence[int]], vocab_size: int, mask_prob: float = 0.15,
                 seed: int | None = None) -> None:
        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob!r}")
        self.sequences = [torch.tensor(s, dtype=torch.long) for s in sequences]
        self.vocab_size, self.mask_prob = vocab_size, mask_prob
        self.fixed = None
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
            self.fixed = [self._mask(s, generator) for s in self.sequences]

    def _mask(self, ids: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        chosen = torch.rand(ids.shape, generator=generator) < self.mask_prob
        chosen[torch.randint(len(ids), (1,), generator=generator)] = True  # ≥ 1 target per sequence
        action = torch.rand(ids.shape, generator=generator)
        random_ids = torch.randint(len(SPECIALS), self.vocab_size, ids.shape, generator=generator)
        inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, MASK), ids)
        inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
        return inputs, torch.where(chosen, ids, torch.full_like(ids, IGNORE))

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.fixed[i] if self.fixed is not None else self._mask(self.sequences[i], None)


def collate_mlm(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Pad inputs with ``<pad>`` and labels with ``IGNORE``: (N, L_max) each."""
    inputs, labels = zip(*batch)
    return (nn.utils.rnn.pad_sequence(inputs, batch_first=True, padding_value=PAD),
            nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE))


class MLMTask(Task):
    """Cross-entropy on the masked positions of ``(inputs (N, L), labels (N, L))`` batches.

    The model maps ids (N, L) to logits (N, L, V). Counts are masked tokens; ``test_ppl`` is
    exp(mean masked-token loss).
    """

    metric = "ppl"

    @staticmethod
    def _stats(logits: Tensor, labels: Tensor) -> tuple[Tensor, float, float]:
        targets = labels != IGNORE
        loss = F.cross_entropy(logits[targets].float(), labels[targets])
        correct = float((logits[targets].argmax(-1) == labels[targets]).sum())
        return loss, correct, float(targets.sum())

    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        inputs, labels = batch
        loss, correct, count = self._stats(model(inputs), labels)
        return loss, {"loss_sum": float(loss.detach()) * count, "correct": correct, "count": count}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        loss_sum = correct = count = 0.0
        for inputs, labels in batches:
            loss, c, n = self._stats(model(inputs), labels)
            loss_sum, correct, count = loss_sum + float(loss) * n, correct + c, count + n
        loss = loss_sum / max(count, 1.0)
        return {"test_loss": loss, "test_acc": correct / max(count, 1.0), "test_ppl": math.exp(min(loss, 50.0))}


def _mlm_bundle(train: list[list[str]], test: list[list[str]], mask_prob: float,
                split_seed: int, min_freq: int) -> DataBundle:
    vocab = Vocab.build(train, min_freq)
    encode = [vocab.encode(s) for s in train], [vocab.encode(s) for s in test]
    return DataBundle(
        train=MaskedLMDataset(encode[0], len(vocab), mask_prob),
        train_for_eval=partial(MaskedLMDataset, encode[0], len(vocab), mask_prob, seed=split_seed),
        test=MaskedLMDataset(encode[1], len(vocab), mask_prob, seed=split_seed),
        task=MLMTask(),
        model_kwargs={"vocab_size": len(vocab)},
        collate_fn=collate_mlm,
    )


@register_dataset("mlm_toy")
def mlm_toy(n_train: int = 20000, n_test: int = 1000, mask_prob: float = 0.15,
            split_seed: int = 0, **_: Any) -> DataBundle:
    """Masked LM on toy-language sentences (disjoint train/test), fixed by ``split_seed``."""
    sentences = toy_sentences(n_train + n_test, split_seed)
    return _mlm_bundle(sentences[:n_train], sentences[n_train:], mask_prob, split_seed, 1)


def read_lines(path: Path, max_len: int) -> list[list[str]]:
    """Whitespace-tokenized non-empty lines, long ones cut into chunks of ≤ ``max_len`` tokens."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens = line.split()
        out += [tokens[i : i + max_len] for i in range(0, len(tokens), max_len)]
    return out


def find_files(directory: Path, names: Sequence[str], what: str) -> list[Path]:
    """``directory/name`` for each name; ``FileNotFoundError`` naming the path and all expected files."""
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what}: {directory} lacks {', '.join(missing)}; expected the files {', '.join(names)} there"
        )
    return [directory / n for n in names]


@register_dataset("mlm_text")
def mlm_text(root: str = "data", text_dir: str = "text", max_len: int = 128,
             min_freq: int = 1, mask_prob: float = 0.15, split_seed: int = 0, **_: Any) -> DataBundle:
    """Masked LM on ``<root>/<text_dir>/{train,test}.txt`` (one pre-tokenized sentence or
    paragraph per line, e.g. WikiText after tokenization); tokens rarer than ``min_freq`` in the
    training file become ``<unk>``."""
    train_path, test_path = find_files(Path(root) / text_dir, ("train.txt", "test.txt"), "mlm_text")
    return _mlm_bundle(read_lines(train_path, max_len), read_lines(test_path, max_len), mask_prob,
                       split_seed, min_freq)
