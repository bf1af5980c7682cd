"""What turns texts into a classifier's batches, and its labels: `ClassifierVocab` (saved as tokenizer.json).

Words are lower-cased and split into word and punctuation tokens ("isn't" stays one word). A word seen
fewer than `MIN_WORD_FREQ` times in training has no embedding of its own (it is <unk>, as every word
unseen in training will be), so the model learns to read such words through their characters. A
language-model encoder reads the text with each language model's own tokenizer, from the token that
starts a line, the backward model over the tokens reversed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.classify.naive_bayes import bags, choose_ngrams, ngrams_of
from charlm.data import Tokenizer, line_start_id
from charlm.data.tokenizers import tokenizer_from_dict
from charlm.errors import CheckpointError
from charlm.fileio import atomic_write_json
from charlm.models import ClassifierInput

WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
MIN_WORD_FREQ = 2
MAX_WORD_CHARS = 24  # characters of a word its character CNN reads
MAX_LM_TOKENS = 1024  # tokens of a text a language model reads (a longer text is cut)
PAD, UNK = 0, 1
FILE = "tokenizer.json"


def words_of(text: str) -> list[str]:
    """'It isn't great!' -> ['it', "isn't", 'great', '!']."""
    return WORD.findall(text.lower())


class ClassifierVocab:
    """The words, characters and labels of a classifier, and the tokenizers of the language models it reads."""

    kind = "classify"

    def __init__(
        self,
        words: Sequence[str],
        chars: Sequence[str],
        labels: Sequence[str],
        lm_tokenizers: Sequence[tuple[str, Tokenizer]] = (),
        ngrams: Sequence[str] = (),
    ) -> None:
        self.words, self.chars, self.labels = list(words), list(chars), list(labels)
        self.ngrams = list(ngrams)  # the naive Bayes model's unigrams and bigrams ("a b")
        self.ngram_index = {g: i for i, g in enumerate(self.ngrams)}
        self.lm_tokenizers = list(lm_tokenizers)  # (direction, tokenizer)
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.char_index = {c: i for i, c in enumerate(self.chars)}
        self.label_index = {x: i for i, x in enumerate(self.labels)}
        self._starts = [_start(tok) for _, tok in self.lm_tokenizers]

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        labels: Sequence[str],
        lm_tokenizers: Sequence[tuple[str, Tokenizer]] = (),
        ngrams: bool = False,
    ) -> ClassifierVocab:
        word_lists = [words_of(t) for t in texts]
        counts = Counter(w for words in word_lists for w in words)
        kept = sorted((w for w, n in counts.items() if n >= MIN_WORD_FREQ), key=lambda w: (-counts[w], w))
        chars = sorted({c for w in counts for c in w})
        grams = choose_ngrams(word_lists, len(labels)) if ngrams else []
        return cls(["<pad>", "<unk>", *kept], ["<pad>", "<unk>", *chars], labels, lm_tokenizers, grams)

    def ngram_sets(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's n-grams the model knows, as ids (unknown ones are left out)."""
        index = self.ngram_index
        return [
            np.fromiter((i for g in ngrams_of(words_of(t)) if (i := index.get(g)) is not None), dtype=np.int64)
            for t in texts
        ]

    def with_ngrams(self, batch: ClassifierInput, texts: Sequence[str]) -> ClassifierInput:
        """`batch` with its texts' n-grams, for the naive Bayes model (when the vocabulary has n-grams)."""
        if self.ngrams:
            batch.ngram_ids, batch.ngram_offsets = bags(self.ngram_sets(texts))
        return batch

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[str]) -> ClassifierInput:
        """Texts -> one batch on the CPU (see `ClassifierInput`); an empty text reads as one <unk>."""
        if self.lm_tokenizers:
            return self.with_ngrams(self._encode_lm(texts), texts)
        rows = [words_of(t) or ["<unk>"] for t in texts]
        T = -(-max(len(r) for r in rows) // 8) * 8  # a few shapes, not one a batch: the fused layers plan per shape
        ids = np.zeros((len(rows), T), dtype=np.int64)
        type_index = np.zeros((len(rows), T), dtype=np.int64)
        types: dict[str, int] = {}
        for i, row in enumerate(rows):
            ids[i, : len(row)] = [self.word_index.get(w, UNK) for w in row]
            type_index[i, : len(row)] = [types.setdefault(w, len(types)) for w in row]
        C = min(MAX_WORD_CHARS, max(len(w) for w in types))
        chars = np.zeros((len(types), C), dtype=np.int64)
        for w, k in types.items():
            cut = w[:C]
            chars[k, : len(cut)] = [self.char_index.get(c, UNK) for c in cut]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        batch = ClassifierInput(lengths, torch.from_numpy(ids), torch.from_numpy(chars), torch.from_numpy(type_index))
        return self.with_ngrams(batch, texts)

    def _encode_lm(self, texts: Sequence[str]) -> ClassifierInput:
        all_ids, all_lengths = [], []
        for (direction, tok), start in zip(self.lm_tokenizers, self._starts):
            rows = []
            for t in texts:
                ids = tok.encode(t)[: MAX_LM_TOKENS - 1] if t else []
                rows.append([start, *(ids[::-1] if direction == "backward" else ids)])
            T = max(len(r) for r in rows)
            out = np.zeros((len(rows), T), dtype=np.int64)
            for i, r in enumerate(rows):
                out[i, : len(r)] = r
            all_ids.append(torch.from_numpy(out))
            all_lengths.append(torch.tensor([len(r) for r in rows], dtype=torch.int64))
        return ClassifierInput(all_lengths[0], lm_ids=tuple(all_ids), lm_lengths=tuple(all_lengths))

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """How long each text reads (words, or characters for an LM encoder): batches group similar lengths."""
        if self.lm_tokenizers:
            return [len(t) for t in texts]
        return [len(words_of(t)) for t in texts]

    def label_targets(self, labels: Sequence[tuple[str, ...]], multi_label: bool) -> torch.Tensor:
        """Gold labels as targets: (N,) indices, or (N, K) 0/1 floats for multi-label."""
        if not multi_label:
            return torch.tensor([self.label_index[x[0]] for x in labels], dtype=torch.int64)
        out = torch.zeros(len(labels), len(self.labels))
        for i, xs in enumerate(labels):
            out[i, [self.label_index[x] for x in xs]] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "words": self.words,
            "chars": self.chars,
            "labels": self.labels,
            "language_models": [{"direction": d, "tokenizer": t.to_dict()} for d, t in self.lm_tokenizers],
            "ngrams": self.ngrams,
        }

    @classmethod
    def from_dict(cls, d: Any) -> ClassifierVocab:
        try:
            lms = [(str(x["direction"]), tokenizer_from_dict(x["tokenizer"])) for x in d.get("language_models", [])]
            return cls(d["words"], d["chars"], d["labels"], lms, d.get("ngrams", []))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise CheckpointError(f"a classifier's {FILE} is corrupt ({exc.__class__.__name__})") from None

    def save(self, directory: str | os.PathLike[str]) -> None:
        atomic_write_json(Path(directory) / FILE, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> ClassifierVocab:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, train again") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} is corrupt ({exc.__class__.__name__}); train again") from None
        return cls.from_dict(d)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


def _start(tok: Tokenizer) -> int:
    token = line_start_id(tok)
    if token is None:
        raise CheckpointError("the language model's tokenizer has no line end, <eos> or <unk> to start a text from")
    return token
