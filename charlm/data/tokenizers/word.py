"""The word kind: one id per word, with <unk> and <eos>, found by the vectorised word path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from charlm.data.tokenizers.base import EOS, FORMAT, UNK, Tokenizer, id_array, is_int
from charlm.data.tokenizers.pieces import text_chunks, token_safe_pieces
from charlm.data.tokenizers.punct import PUNCT_RE, detokenize
from charlm.data.tokenizers.wordscan import scan_words
from charlm.data.tokenizers.wordtable import WordTable
from charlm.errors import TokenizerError


class WordTokenizer(Tokenizer):
    """One id per word: <unk> (0), <eos> (1, a line end), then words, most frequent first.

    pretokenize="whitespace" splits lines on whitespace, for corpora that are
    already tokenized (PTB, WikiText); "punct" also splits punctuation off words
    (regex `\\w+('\\w+)?|[^\\w\\s]`), for raw text. Decoding joins the words of a
    line with single spaces, so the round trip is exact only for whitespace-
    normalised text (and, with punct, normalises the spacing around punctuation).
    `encode` is the plain reference; `encode_array` and fitting find the same
    words with numpy (`wordscan`, `wordtable`).
    """

    kind = "word"
    options = ("min_freq", "max_size", "pretokenize")
    unk_id = 0
    eos_id = 1
    PRETOKENIZE = ("whitespace", "punct")

    def __init__(self, vocab: Sequence[str], pretokenize: str = "whitespace"):
        vocab = list(vocab)
        if pretokenize not in self.PRETOKENIZE:
            raise TokenizerError(f"unknown pretokenize {pretokenize!r}; choose whitespace or punct")
        if vocab[:2] != [UNK, EOS] or any(not isinstance(w, str) for w in vocab) or len(set(vocab)) != len(vocab):
            raise TokenizerError(
                "word tokenizer data is corrupt (vocab must start with <unk>, <eos> and hold distinct words); "
                "re-train or restore it"
            )
        self.pretokenize = pretokenize
        self._itos = vocab
        self._stoi = {w: i for i, w in enumerate(vocab)}
        self._surface = [w if i != self.eos_id else "\n" for i, w in enumerate(vocab)]
        self._split = str.split if pretokenize == "whitespace" else PUNCT_RE.findall

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @classmethod
    def fit(  # type: ignore[override]  # each kind takes its own options
        cls, text: str, min_freq: int = 1, max_size: int | None = None, pretokenize: str = "whitespace"
    ) -> WordTokenizer:
        """Keep words seen at least `min_freq` times, at most `max_size` ids in all (specials included)."""
        chunks = text_chunks(text, 1 << 20, ("\n", " "))
        return cls.fit_chunks(chunks, min_freq=min_freq, max_size=max_size, pretokenize=pretokenize)

    @classmethod
    def fit_chunks(  # type: ignore[override]  # each kind takes its own options
        cls,
        chunks: Iterable[str],
        *,
        size: int | None = None,
        min_freq: int = 1,
        max_size: int | None = None,
        pretokenize: str = "whitespace",
    ) -> WordTokenizer:
        if not is_int(min_freq) or min_freq < 1:
            raise TokenizerError(f"min_freq must be an integer of at least 1, got {min_freq!r}")
        if max_size is not None and (not is_int(max_size) or max_size < 3):
            raise TokenizerError(f"max vocabulary size must be at least 3 (<unk>, <eos> and a word), got {max_size!r}")
        if pretokenize not in cls.PRETOKENIZE:
            raise TokenizerError(f"unknown pretokenize {pretokenize!r}; choose whitespace or punct")
        table, counts = WordTable(), np.zeros(0, np.int64)
        for piece in token_safe_pieces(chunks, cls.kind):
            spans = scan_words(piece, pretokenize == "punct")
            ids = table.lookup_adding(spans)
            new = np.bincount(ids, minlength=len(table.words))
            new[: len(counts)] += counts
            counts = new
        return cls([UNK, EOS, *_most_frequent(table, counts, min_freq, max_size)], pretokenize)

    def encode(self, text: str) -> list[int]:
        get, ids = self._stoi.get, []
        for i, line in enumerate(text.split("\n")):
            if i:
                ids.append(self.eos_id)
            ids.extend(get(w, self.unk_id) for w in self._split(line))
        return ids

    def encode_array(self, text: str, *, chunk_chars: int = 1 << 20) -> np.ndarray:
        return self.encode_with_oov(text, chunk_chars=chunk_chars)[0]

    def encode_with_oov(self, text: str, *, chunk_chars: int = 1 << 20) -> tuple[np.ndarray, int]:
        """A literal "<unk>" in the text is a word of the vocabulary, so it is not counted as unknown."""
        parts, oov = [], 0
        for chunk in text_chunks(text, chunk_chars, ("\n", " ")):
            spans = scan_words(chunk, self.pretokenize == "punct")
            ids = self._table.lookup(spans)
            unknown = ids < 0
            oov += int(np.count_nonzero(unknown))
            ids[unknown] = self.unk_id
            parts.append(np.insert(ids, np.searchsorted(spans.starts, spans.newlines), self.eos_id).astype(self.dtype))
        return (np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)), oov

    @cached_property
    def _table(self) -> WordTable:
        """The vocabulary as a `WordTable`, built on the first encode (generation never needs it)."""
        table = WordTable()
        table.add([w.encode("utf-8", "surrogatepass") for w in self._itos])
        return table

    @property
    def decode_context(self) -> int:
        """Ids a streaming decoder should keep before new ones: punct spacing looks back (quotes pair up)."""
        return 64 if self.pretokenize == "punct" else 1

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by single spaces, none around a line end; with punct, spaced as text (`detokenize`)."""
        arr = id_array(ids, self.vocab_size)
        surface = self._surface
        words = [surface[i] for i in arr.tolist()]
        if self.pretokenize == "punct":
            return detokenize(words)
        text = " ".join(words)
        return text.replace(" \n", "\n").replace("\n ", "\n")  # no space around a line end

    def unknown_units(self, text: str) -> list[str]:
        """Distinct words that encode to <unk> (a literal "<unk>" in the text is not one of them)."""
        found: dict[str, None] = {}
        for chunk in text_chunks(text, 1 << 20, ("\n", " ")):
            found.update(dict.fromkeys(w for w in dict.fromkeys(self._split(chunk)) if w not in self._stoi))
        return list(found)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "pretokenize": self.pretokenize, "vocab": list(self._itos)}

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> WordTokenizer:
        return cls(d["vocab"], d["pretokenize"])


def _most_frequent(table: WordTable, counts: np.ndarray, min_freq: int, max_size: int | None) -> list[str]:
    """The words counted at least `min_freq` times, most frequent first, ties in code-point order (the
    order of their UTF-8 bytes), at most `max_size - 2` of them; the specials <unk> and <eos> left out."""
    counts = counts.copy()
    for special in (UNK, EOS):
        if (i := table.find(special.encode())) >= 0:
            counts[i] = 0
    keep = np.flatnonzero(counts >= min_freq)
    if not keep.size:
        what = "no words" if not counts.any() else f"no word occurs {min_freq} times or more"
        raise TokenizerError(
            f"cannot fit a word tokenizer: the training text has {what}; pass more text or lower --min-freq"
        )
    limit = len(keep) if max_size is None else min(len(keep), max_size - 2)
    if limit < len(keep):  # sort only the words that can make the cut: those counted as often as the limit-th
        kth = np.partition(counts[keep], len(keep) - limit)[len(keep) - limit]
        keep = keep[counts[keep] >= kth]
    n, words = counts.tolist(), table.words
    order = sorted(keep.tolist(), key=lambda i: (-n[i], words[i]))[:limit]
    return [words[i].decode("utf-8", "surrogatepass") for i in order]
