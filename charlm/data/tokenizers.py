"""Text <-> token ids: one interface, three kinds, always fitted on training text only.

    char     <unk> (id 0) + the sorted distinct characters of the fitted text.
             Unseen characters encode to <unk>, which decodes to U+FFFD.
    word     <unk> (id 0) and <eos> (id 1) + words, most frequent first (ties in
             code-point order). <eos> is a line end (PTB convention): "\\n" encodes
             to <eos> and <eos> decodes to "\\n"; the words of a line are joined
             by single spaces. Literal "<unk>" / "<eos>" tokens in the text map to
             those ids, so pre-tokenized corpora (WikiText, PTB) keep their <unk>;
             <unk> decodes to "<unk>" (and a literal "<eos>" comes back as "\\n").
    subword  SentencePiece (unigram by default, or bpe; 1000 pieces by default)
             trained in memory, lossless for any Unicode text: identity
             normalisation, no whitespace folding, byte fallback for unseen
             characters, "\\n" as its own piece. id 0 is <unk>, which byte
             fallback makes unreachable from text (it would decode to U+FFFD).

`encode_array` is the vectorised path for whole corpora (no Python step per
token; `encode` is the plain reference it equals); it returns the smallest
unsigned dtype that holds every id (`id_dtype`), and `encode_with_oov` also counts
the tokens outside the vocabulary. `fit_tokenizer_stream` fits any kind on a
stream of text chunks in one pass whose memory is bounded by the chunk size and
the vocabulary, never by the corpus, and gives the same tokenizer as fitting on
the joined text (`fit_tokenizer`); `token_safe_pieces` cuts a stream where no
token spans a cut. A subword text encoded in pieces can differ from the whole
text's encoding where two segmentations score the same to within rounding (both
decode to the text). Tokenizers are plain data:
`to_dict`/`tokenizer_from_dict` and `save`/`load_tokenizer` (JSON, plus the
SentencePiece model's own bytes in tokenizer.model); nothing is pickled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache, cached_property
from itertools import chain, islice
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import sentencepiece as spm

from charlm.errors import TokenizerError, one_line

FORMAT = 1
TOKENIZER_FILE = "tokenizer.json"
SUBWORD_MODEL_FILE = "tokenizer.model"
UNK, EOS = "<unk>", "<eos>"


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned numpy integer type that holds ids 0..vocab_size-1."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


class Tokenizer(ABC):
    """Converts between text and token ids; the only part of charlm that does."""

    kind: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()  # the keyword options of `fit`
    unk_id: int = 0
    eos_id: int | None = None

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    def dtype(self) -> np.dtype:
        return id_dtype(self.vocab_size)

    @classmethod
    @abstractmethod
    def fit(cls, text: str, **options: Any) -> Tokenizer:
        """Build the vocabulary from training text."""

    @classmethod
    @abstractmethod
    def fit_chunks(cls, chunks: Iterable[str], *, size: int | None = None, **options: Any) -> Tokenizer:
        """Build the vocabulary from training text given as chunks, in one pass: the same as `fit("".join(chunks))`.

        `size` is the text's length in UTF-8 bytes (or an upper bound); only the subword kind needs it.
        """

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text -> ids; the plain reference path (see `encode_array` for whole corpora)."""

    def encode_array(self, text: str) -> np.ndarray:
        """Text -> ids as a 1-D array of `self.dtype`, equal to `encode(text)`."""
        return np.asarray(self.encode(text), dtype=self.dtype)

    def encode_with_oov(self, text: str) -> tuple[np.ndarray, int]:
        """`encode_array(text)` and how many of its tokens are <unk> because the vocabulary lacks them."""
        ids = self.encode_array(text)
        return ids, int(np.count_nonzero(ids == self.unk_id))

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Ids (list, numpy array or 1-D torch tensor) -> text; an id out of range is a TokenizerError."""

    @abstractmethod
    def unknown_units(self, text: str) -> list[str]:
        """The distinct units of `text` that would encode to <unk>, in order of first appearance."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data with "format" and "kind"; `tokenizer_from_dict` reverses it."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        """Rebuild a tokenizer from `to_dict` data (on a subclass: only of that kind)."""
        tok = tokenizer_from_dict(d)
        if not isinstance(tok, cls):
            raise TokenizerError(
                f"tokenizer data is of kind {tok.kind!r}, not {cls.kind!r}; load it with tokenizer_from_dict"
            )
        return tok

    @classmethod
    @abstractmethod
    def _from_dict(cls, d: dict[str, Any]) -> Tokenizer: ...

    def save(self, directory: str | os.PathLike) -> None:
        """Write directory/tokenizer.json (and any side file), each atomically."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, data in self._side_files().items():
                _atomic_write(directory / name, data)
            _atomic_write(directory / TOKENIZER_FILE, json.dumps(self._json_dict(), indent=1).encode("utf-8") + b"\n")
        except OSError as exc:
            raise TokenizerError(
                f"cannot save the tokenizer in {directory}: {exc.strerror}; check that it is writable"
            ) from None

    def _json_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def _side_files(self) -> dict[str, bytes]:
        return {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------- char


class CharTokenizer(Tokenizer):
    """One id per character: <unk> (id 0) + the fitted text's characters in code-point order."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars) or any(a >= b for a, b in zip(chars, chars[1:])):
            raise TokenizerError(
                "char tokenizer data is corrupt (chars must be distinct single characters in order); "
                "re-train or restore it"
            )
        self._chars = chars
        self._stoi = {c: i + 1 for i, c in enumerate(chars)}
        codes = np.array([ord(c) for c in chars], dtype=np.int64)
        # table[code] -> id for every code up to the largest known one; the extra last entry is <unk>
        self._table = np.zeros(int(codes.max(initial=-1)) + 2, dtype=self.dtype)
        self._table[codes] = np.arange(1, len(chars) + 1)
        self._codes = np.concatenate([[0xFFFD], codes]).astype("<u4")  # id -> code point; <unk> -> U+FFFD
        # ASCII text with a one-byte vocabulary: bytes.translate maps every byte to its id at memory speed
        self._ascii_ids: bytes | None = None
        if self.dtype == np.uint8:
            ascii_ids = np.zeros(256, np.uint8)
            n = min(len(self._table), 128)
            ascii_ids[:n] = self._table[:n]
            self._ascii_ids = ascii_ids.tobytes()

    @property
    def vocab_size(self) -> int:
        return len(self._chars) + 1

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:  # type: ignore[override]  # each kind takes its own options
        return cls.fit_chunks(text[i : i + (1 << 20)] for i in range(0, len(text), 1 << 20))

    @classmethod
    def fit_chunks(cls, chunks: Iterable[str], *, size: int | None = None) -> CharTokenizer:  # type: ignore[override]  # each kind takes its own options
        seen = _CharSet()
        for chunk in chunks:
            seen.update(chunk)
        if not seen.chars:
            raise TokenizerError("cannot fit a char tokenizer on empty text; pass a training text with some characters")
        return cls(sorted(seen.chars))

    def encode(self, text: str) -> list[int]:
        get = self._stoi.get
        return [get(c, 0) for c in text]

    def encode_array(self, text: str, *, chunk_chars: int = 1 << 17) -> np.ndarray:
        # pieces of 128k characters keep the temporaries in cache: twice as fast as 1M here
        out = np.empty(len(text), dtype=self.dtype)
        for start in range(0, len(text), chunk_chars):
            piece = text[start : start + chunk_chars]
            if piece.isascii() and self._ascii_ids is not None:  # isascii() is O(1): CPython keeps the flag
                ids = piece.encode("ascii").translate(self._ascii_ids)
                out[start : start + len(piece)] = np.frombuffer(ids, np.uint8)
            else:
                out[start : start + len(piece)] = self._lookup(_code_points(piece))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        arr = _id_array(ids, self.vocab_size)
        return self._codes[arr].tobytes().decode("utf-32-le", "surrogatepass")

    def unknown_units(self, text: str, *, chunk_chars: int = 1 << 20) -> list[str]:
        found: dict[str, None] = {}
        for start in range(0, len(text), chunk_chars):
            codes = _code_points(text[start : start + chunk_chars])
            unknown = codes[self._lookup(codes) == 0]
            if unknown.size:
                uniq, first = np.unique(unknown, return_index=True)
                found.update(dict.fromkeys(chr(c) for c in uniq[np.argsort(first)]))
        return list(found)

    def _lookup(self, codes: np.ndarray) -> np.ndarray:
        return np.take(self._table, codes, mode="clip")  # a code past the table reads its last entry, <unk>

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "chars": list(self._chars)}  # id = position + 1

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(d["chars"])


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class _CharSet:
    """The distinct characters of a stream of text, gathered at memory speed once the ASCII ones are known."""

    def __init__(self) -> None:
        self.chars: set[str] = set()
        self._known_ascii = b""  # bytes.translate deletes these, so only new or non-ASCII characters are left

    def update(self, text: str) -> None:
        rest = text.encode("utf-8", "surrogatepass").translate(None, self._known_ascii)
        if rest:
            self.chars.update(rest.decode("utf-8", "surrogatepass"))
            self._known_ascii = bytes(sorted(ord(c) for c in self.chars if ord(c) < 128))


# --------------------------------------------------------------------------- word

# punct: words (with an inner apostrophe: don't, l'homme) or single punctuation marks;
# the special tokens come first so that "<unk>" stays one token
_PUNCT = r"<unk>|<eos>|\w+(?:'\w+)?|[^\w\s]"
_PUNCT_RE = re.compile(_PUNCT)


class WordTokenizer(Tokenizer):
    """One id per word: <unk> (0), <eos> (1, a line end), then words, most frequent first.

    pretokenize="whitespace" splits lines on whitespace, for corpora that are
    already tokenized (PTB, WikiText); "punct" also splits punctuation off words
    (regex `\\w+('\\w+)?|[^\\w\\s]`), for raw text. Decoding joins the words of a
    line with single spaces, so the round trip is exact only for whitespace-
    normalised text (and, with punct, normalises the spacing around punctuation).
    `encode` is the plain reference; `encode_array` and fitting find the same
    words with numpy (see "word scanning" below).
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
        self._split = str.split if pretokenize == "whitespace" else _PUNCT_RE.findall

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @classmethod
    def fit(  # type: ignore[override]  # each kind takes its own options
        cls, text: str, min_freq: int = 1, max_size: int | None = None, pretokenize: str = "whitespace"
    ) -> WordTokenizer:
        """Keep words seen at least `min_freq` times, at most `max_size` ids in all (specials included)."""
        chunks = _chunks(text, 1 << 20, ("\n", " "))
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
        if not _is_int(min_freq) or min_freq < 1:
            raise TokenizerError(f"min_freq must be an integer of at least 1, got {min_freq!r}")
        if max_size is not None and (not _is_int(max_size) or max_size < 3):
            raise TokenizerError(f"max vocabulary size must be at least 3 (<unk>, <eos> and a word), got {max_size!r}")
        if pretokenize not in cls.PRETOKENIZE:
            raise TokenizerError(f"unknown pretokenize {pretokenize!r}; choose whitespace or punct")
        table, counts = _WordTable(), np.zeros(0, np.int64)
        for piece in token_safe_pieces(chunks, cls.kind):
            spans = _scan_words(piece, pretokenize == "punct")
            ids = _ids_adding_words(table, spans)
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
        for chunk in _chunks(text, chunk_chars, ("\n", " ")):
            spans = _scan_words(chunk, self.pretokenize == "punct")
            ids = self._table.lookup(spans)
            unknown = ids < 0
            oov += int(np.count_nonzero(unknown))
            ids[unknown] = self.unk_id
            parts.append(np.insert(ids, np.searchsorted(spans.starts, spans.newlines), self.eos_id).astype(self.dtype))
        return (np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)), oov

    @cached_property
    def _table(self) -> _WordTable:
        """The vocabulary as a `_WordTable`, built on the first encode (generation never needs it)."""
        table = _WordTable()
        table.add([w.encode("utf-8", "surrogatepass") for w in self._itos])
        return table

    @property
    def decode_context(self) -> int:
        """Ids a streaming decoder should keep before new ones: punct spacing looks back (quotes pair up)."""
        return 64 if self.pretokenize == "punct" else 1

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by single spaces, none around a line end; with punct, spaced as text (`_detokenize`)."""
        arr = _id_array(ids, self.vocab_size)
        surface = self._surface
        words = [surface[i] for i in arr.tolist()]
        if self.pretokenize == "punct":
            return _detokenize(words)
        text = " ".join(words)
        return text.replace(" \n", "\n").replace("\n ", "\n")  # no space around a line end

    def unknown_units(self, text: str) -> list[str]:
        """Distinct words that encode to <unk> (a literal "<unk>" in the text is not one of them)."""
        found: dict[str, None] = {}
        for chunk in _chunks(text, 1 << 20, ("\n", " ")):
            found.update(dict.fromkeys(w for w in dict.fromkeys(self._split(chunk)) if w not in self._stoi))
        return list(found)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "pretokenize": self.pretokenize, "vocab": list(self._itos)}

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> WordTokenizer:
        return cls(d["vocab"], d["pretokenize"])


# punct decoding: marks written against the word before them, or the word after them
_CLOSE = frozenset(",.;:!?)]}%\u2026\u201d")  # ... and the closing curly double quote
_OPEN = frozenset("([{\u201c\u2018")
_CONTRACTION = frozenset(("s", "t", "d", "m", "ll", "re", "ve"))  # after a curly apostrophe: don\u2019t, it\u2019s


def _wordish(token: str | None) -> bool:
    return bool(token) and (token[-1].isalnum() or token[-1] == "_")  # type: ignore[index]


def _detokenize(words: list[str]) -> str:
    """The punct pre-tokenizer's tokens ("\\n" for a line end) as text.

    No space before , . ; : ! ? % and closing brackets, none after opening ones;
    straight double quotes pair up (opening, then closing) within a paragraph; a
    straight single quote closes an open one or a plural possessive (the dogs'
    bowls) and opens elsewhere; hyphens join words (well-known, and--dashes); 1,000
    and 3.5 stay numbers; a curly apostrophe joins a contraction (don\u2019t).

    Re-encoding the text gives the same tokens: two word tokens are never joined, and a straight
    apostrophe (which the pre-tokenizer reads inside a word, as in don't) never touches words on both
    sides. Each token's spacing depends only on the tokens before it, so decoding a prefix of the ids
    gives a prefix of the text, which streaming generation relies on.
    """
    out: list[str] = []
    prev: str | None = None  # the tokens before this one on its line
    prev2: str | None = None
    glue_next = False  # the previous token holds on to this one (an opening quote, a joining hyphen)
    double_open = single_open = False
    for w in words:
        if w == "\n":
            out.append("\n")
            if prev is None:  # an empty line: a new paragraph, where quotes start afresh
                double_open = single_open = False
            prev = prev2 = None
            glue_next = False
            continue
        glue = prev is None or glue_next or w in _CLOSE or prev in _OPEN
        glue_next = False
        if w == '"':
            glue |= double_open  # a closing quote sits on what it closes ...
            glue_next = not double_open  # ... an opening one on what it opens
            double_open = not double_open
        elif w == "'":
            if (_wordish(prev) and (single_open or str(prev).endswith("s"))) or (single_open and prev in _CLOSE):
                glue, single_open = True, False
            else:
                glue_next, single_open = True, True
        elif w == "\u2019":
            glue = glue or _wordish(prev)
        elif w == "-":
            glue = glue or _wordish(prev) or prev == "-"
            glue_next = glue and prev is not None
        elif w.isdigit() and prev in (",", ".") and prev2 is not None and prev2.isdigit():
            glue = glue or prev == "." or len(w) == 3  # 3.5, 1,000 (not "in 1812, 5 men")
        elif prev == "\u2019" and w in _CONTRACTION and _wordish(prev2):
            glue = True
        if out and not glue:
            out.append(" ")
        out.append(w)
        prev2, prev = prev, w
    return "".join(out)


def _ids_adding_words(table: _WordTable, spans: _Spans) -> np.ndarray:
    """The ids of a chunk's words, adding to `table` the words it lacks (one Python step per new word)."""
    ids = table.lookup(spans)
    while (missing := np.flatnonzero(ids < 0)).size:
        # one representative per distinct hash is added; two new words sharing a hash take two rounds
        sub = _Spans(spans.buf, spans.starts[missing], spans.ends[missing], spans.newlines[:0])
        hashes, _ = _hash_spans(_u64_view(sub.buf), sub.starts, sub.ends - sub.starts)
        _, first = np.unique(hashes, return_index=True)
        table.add([spans.buf[s:e] for s, e in zip(sub.starts[first].tolist(), sub.ends[first].tolist())])
        ids[missing] = table.lookup(sub)
    return ids


def _most_frequent(table: _WordTable, counts: np.ndarray, min_freq: int, max_size: int | None) -> list[str]:
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


# --------------------------------------------------------------------------- word scanning
#
# The vectorised word path: a chunk's UTF-8 bytes -> token spans found with numpy -> ids through an exact
# hash table (`_WordTable`), with no Python step per token. It finds exactly the words of `str.split()`
# (whitespace) or of `_PUNCT_RE` (punct), which a property test checks against `WordTokenizer.encode`.

# the characters str.split() and the regex \s split on (str.isspace()); a test checks this list
_SPACES = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_WIDE_SPACES = np.array([ord(c) for c in _SPACES if ord(c) >= 0x80], dtype=np.uint32)
_PAD = bytes(8)  # zeros after a chunk's bytes, so that an 8-byte read at any of its bytes stays in the buffer
_SPECIAL_TAILS = np.frombuffer(b"unk>eos>", "<u4")  # the 4 bytes after "<" in <unk> and <eos>, as integers


class _Spans(NamedTuple):
    """A chunk's words as byte spans [starts, ends) of its UTF-8 `buf`, and the offsets of its "\\n" bytes."""

    buf: bytes
    starts: np.ndarray
    ends: np.ndarray
    newlines: np.ndarray


def _scan_words(text: str, punct: bool) -> _Spans:
    """The words of `text` as `str.split()` (or, with punct, `_PUNCT_RE` line by line) finds them."""
    buf = text.encode("utf-8", "surrogatepass") + _PAD
    b = np.frombuffer(buf, np.uint8)[: -len(_PAD)]
    space = (np.subtract(b, 9, dtype=np.uint8) <= 4) | (np.subtract(b, 28, dtype=np.uint8) <= 4)  # \t..\r, \x1c..space
    word = None
    if punct:  # \w: ASCII letters, digits and "_"
        word = (np.subtract(b, 48, dtype=np.uint8) <= 9) | (np.subtract(b | 32, 97, dtype=np.uint8) <= 25) | (b == 95)
    if not text.isascii():  # classify each multi-byte character, and mark all its bytes alike
        lead, size, code = _wide_chars(buf, len(b))
        _mark(space, lead, size, np.isin(code, _WIDE_SPACES))
        if word is not None:
            _mark(word, lead, size, _word_chars()[code])
    if word is not None:
        starts, ends = _punct_spans(buf, b, space, word, text.isascii())
    else:  # a word is a run of non-space bytes: its edges are where "space" flips
        edges = np.ones(len(b) + 2, bool)
        edges[1:-1] = space
        edges = np.flatnonzero(edges[1:] != edges[:-1])
        starts, ends = edges[0::2], edges[1::2]
    return _Spans(buf, starts, ends, np.flatnonzero(b == 10))


def _wide_chars(buf: bytes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offset, length in bytes and code point of every multi-byte character in the first n bytes of buf."""
    b = np.frombuffer(buf, np.uint8)
    lead = np.flatnonzero(b[:n] >= 0xC0)
    b0 = b[lead].astype(np.uint32)
    c1, c2, c3 = ((b[lead + k] & 0x3F).astype(np.uint32) for k in (1, 2, 3))  # the pad keeps these in bounds
    size = 2 + (b0 >= 0xE0).astype(np.int64) + (b0 >= 0xF0)
    code = np.select(
        [size == 2, size == 3],
        [(b0 & 0x1F) << 6 | c1, (b0 & 0x0F) << 12 | c1 << 6 | c2],
        (b0 & 0x07) << 18 | c1 << 12 | c2 << 6 | c3,
    )
    return lead, size, code


def _mark(mask: np.ndarray, lead: np.ndarray, size: np.ndarray, which: np.ndarray) -> None:
    """Set `mask` on every byte of the multi-byte characters selected by `which`."""
    lead, size = lead[which], size[which]
    for k in range(4):
        mask[lead[size > k] + k] = True


@cache
def _word_chars() -> np.ndarray:
    """Which code points the regex \\w matches, as a table (built on first use, in about 0.3 s)."""
    marked = re.sub(r"\w", "\x00", "".join(map(chr, range(0x110000))))  # "\x00" is not \w
    table = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), "<u4") == 0
    table[0] = False
    return table


def _punct_spans(
    buf: bytes, b: np.ndarray, space: np.ndarray, word: np.ndarray, ascii: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The spans of `_PUNCT_RE`'s matches: <unk>/<eos>, \\w+('\\w+)?, or one other non-space character."""
    n = len(b)
    lt = np.flatnonzero(b == 60)  # "<"
    special = lt[np.isin(np.ndarray((len(buf) - 3,), "<u4", buffer=buf, strides=(1,))[lt + 1], _SPECIAL_TAILS)]
    inner = np.zeros(n + 5, bool)  # the 4 bytes after the "<" of a special token
    for k in range(1, 5):
        inner[special + k] = True
    inner = inner[:n]
    word &= ~inner
    run_start = word.copy()
    run_start[1:] &= ~word[:-1]
    start = run_start | ~(word | space | inner)  # a word run, or any other character, starts a token ...
    if not ascii:
        start &= (b & 0xC0) != 0x80  # ... at its first byte
    joined = _joined_apostrophes(b, word, run_start)
    start[joined] = False  # "don't" is one token: neither the apostrophe nor "t" starts one
    start[joined + 1] = False
    token = ~space
    end = token.copy()  # a token ends where the next byte is a space or starts another token
    end[:-1] &= space[1:] | start[1:]
    return np.flatnonzero(start), np.flatnonzero(end) + 1


def _joined_apostrophes(b: np.ndarray, word: np.ndarray, run_start: np.ndarray) -> np.ndarray:
    """The apostrophes inside a \\w+'\\w+ token.

    An apostrophe between two word runs links them, but a token takes one link:
    the regex reads a'b'c'd as a'b, ', c'd. So along a chain of linked runs every
    other link, from the first, joins.
    """
    ap = np.flatnonzero(b[1:-1] == 39) + 1  # "'", not at either end
    ap = ap[word[ap - 1] & word[ap + 1]]
    if not ap.size:
        return ap
    left = np.searchsorted(np.flatnonzero(run_start), ap - 1, side="right")  # the run before each, numbered from 1
    i = np.arange(ap.size)
    chain_start = np.ones(ap.size, bool)
    chain_start[1:] = left[1:] != left[:-1] + 1
    first = np.maximum.accumulate(np.where(chain_start, i, 0))
    return ap[(i - first) % 2 == 0]


_MAX_BLOCKS = 32  # words up to 32 8-byte blocks (256 bytes) are matched with numpy, longer ones through a dict
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd (2^64 / golden ratio): multiplicative hashing keeps the top bits
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)  # [k]: keep k bytes


def _u64_view(buf: bytes) -> np.ndarray:
    """view[i] = the 8 bytes of buf from offset i, as a little-endian integer (an overlapping, unaligned view)."""
    return np.ndarray((len(buf) - 7,), "<u8", buffer=buf, strides=(1,))


def _block(view: np.ndarray, starts: np.ndarray, lens: np.ndarray, j: int) -> np.ndarray:
    """Block j (bytes 8j..8j+7) of each span, zero past the span's end."""
    if j == 0:  # the hot case: every word's first block
        return view[starts] & _LOW_BYTES[np.minimum(lens, 8)]
    return view[starts + 8 * j] & _LOW_BYTES[np.minimum(lens - 8 * j, 8)]


def _hash_spans(view: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of each span's bytes (of its first _MAX_BLOCKS blocks), and its first block."""
    first = _block(view, starts, lens, 0)
    h = first * _HASH_MUL
    more = np.flatnonzero(lens > 8)
    for j in range(1, _MAX_BLOCKS):
        if not more.size:
            break
        hm = h[more]
        h[more] = (hm ^ (hm >> 29) ^ _block(view, starts[more], lens[more], j)) * _HASH_MUL
        more = more[lens[more] > 8 * (j + 1)]
    return h, first


class _WordTable:
    """An exact map from words (UTF-8 bytes) to ids 0, 1, ... that looks up all the words of a chunk at once.

    Open addressing with linear probing on a multiplicative hash of each word's
    8-byte blocks. A slot's word is taken only when its length and every block
    equal the token's, so a hash collision costs a probe, never a wrong id: the
    result is exact, with no probability of error. Words over 256 bytes (rare)
    live in a plain dict.
    """

    def __init__(self) -> None:
        self.words: list[bytes] = []  # id -> word
        self._long: dict[bytes, int] = {}
        # per id, in arrays with spare room; the spare entries keep length -1, so the empty slot (-1),
        # which reads the last entry, matches no token
        self._lens = np.full(16, -1, np.int64)
        self._firsts = np.zeros(16, np.uint64)  # the first block
        self._hashes = np.zeros(16, np.uint64)
        self._offsets = np.zeros(16, np.int64)  # where its blocks start in _blocks
        self._blocks = np.zeros(16, np.uint64)
        self._n_blocks = 0
        self._slots = np.full(16, -1, np.int32)  # id or -1
        self._n_slotted = 0

    def add(self, words: list[bytes]) -> None:
        """Append new words (not already in the table), taking the next ids."""
        first_id, n = len(self.words), len(words)
        self.words.extend(words)
        lens = np.fromiter(map(len, words), np.int64, count=n)
        packed = b"".join(w + bytes(-len(w) % 8) for w in words) + _PAD
        n_blocks = (lens + 7) // 8
        starts = np.concatenate([[0], np.cumsum(n_blocks)[:-1]]).astype(np.int64) * 8  # in bytes of `packed`
        hashes, firsts = _hash_spans(_u64_view(packed), starts, lens)
        total = first_id + n
        self._lens = _fit(self._lens, total + 1, -1)  # + 1: the last entry must stay spare
        self._firsts = _fit(self._firsts, total + 1, 0)
        self._hashes = _fit(self._hashes, total + 1, 0)
        self._offsets = _fit(self._offsets, total + 1, 0)
        self._blocks = _fit(self._blocks, self._n_blocks + len(packed) // 8, 0)
        self._lens[first_id:total], self._firsts[first_id:total], self._hashes[first_id:total] = lens, firsts, hashes
        self._offsets[first_id:total] = self._n_blocks + starts // 8
        self._blocks[self._n_blocks : self._n_blocks + len(packed) // 8] = np.frombuffer(packed, "<u8")
        self._n_blocks += int(n_blocks.sum())
        long = lens > 8 * _MAX_BLOCKS
        self._long.update((words[i], first_id + i) for i in np.flatnonzero(long).tolist())
        self._n_slotted += n - int(long.sum())
        if 4 * self._n_slotted > len(self._slots):  # at most a quarter full, so probes stay short: rebuild larger
            self._slots = np.full(1 << (4 * self._n_slotted).bit_length(), -1, np.int32)
            self._insert(np.flatnonzero(self._lens[:total] <= 8 * _MAX_BLOCKS))
        else:
            self._insert(first_id + np.flatnonzero(~long))

    def find(self, word: bytes) -> int:
        """The id of one word, or -1."""
        buf = word + _PAD
        return int(self.lookup(_Spans(buf, np.zeros(1, np.int64), np.array([len(word)]), np.zeros(0, np.int64)))[0])

    def lookup(self, spans: _Spans) -> np.ndarray:
        """The id of every span's word (int64), -1 where the table lacks it."""
        view, starts, lens = _u64_view(spans.buf), spans.starts, spans.ends - spans.starts
        hashes, firsts = _hash_spans(view, starts, lens)
        slot = (hashes >> self._shift).astype(np.intp)
        cand = self._slots[slot]
        out = np.where(self._matches(view, starts, lens, firsts, cand), cand, -1)
        todo = np.flatnonzero((out < 0) & (cand >= 0))  # another word holds the slot: probe the next ones
        while todo.size:
            slot[todo] = (slot[todo] + 1) & (len(self._slots) - 1)
            cand = self._slots[slot[todo]]
            found = self._matches(view, starts[todo], lens[todo], firsts[todo], cand)
            out[todo[found]] = cand[found]
            todo = todo[~found & (cand >= 0)]
        for i in np.flatnonzero(lens > 8 * _MAX_BLOCKS).tolist():
            out[i] = self._long.get(spans.buf[starts[i] : spans.ends[i]], -1)
        return out

    def _matches(
        self, view: np.ndarray, starts: np.ndarray, lens: np.ndarray, firsts: np.ndarray, ids: np.ndarray
    ) -> np.ndarray:
        """Whether each span holds word `ids` (an empty slot's -1 matches nothing)."""
        same = (self._firsts[ids] == firsts) & (self._lens[ids] == lens)
        longer = np.flatnonzero(same & (lens > 8))
        if longer.size:
            same[longer] = self._same_tail(view, starts[longer], lens[longer], ids[longer])
        return same

    @property
    def _shift(self) -> np.uint64:
        return np.uint64(64 - (len(self._slots).bit_length() - 1))

    def _same_tail(self, view: np.ndarray, starts: np.ndarray, lens: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Whether each span's blocks after the first equal those of word `ids` (lengths already equal)."""
        same = np.ones(len(ids), bool)
        more = np.arange(len(ids))
        for j in range(1, _MAX_BLOCKS):
            more = more[same[more] & (lens[more] > 8 * j)]
            if not more.size:
                break
            same[more] = _block(view, starts[more], lens[more], j) == self._blocks[self._offsets[ids[more]] + j]
        return same

    def _insert(self, ids: np.ndarray) -> None:
        """Put ids in their slots: each probes from its hash's slot to the first free one."""
        mask = len(self._slots) - 1
        pos = (self._hashes[ids] >> self._shift).astype(np.intp)
        while ids.size:
            free = np.flatnonzero(self._slots[pos] < 0)
            _, first = np.unique(pos[free], return_index=True)  # several may want one slot: the first takes it
            taken = free[first]
            self._slots[pos[taken]] = ids[taken]
            left = np.ones(ids.size, bool)
            left[taken] = False
            ids, pos = ids[left], (pos[left] + 1) & mask


def _fit(arr: np.ndarray, n: int, fill: int) -> np.ndarray:
    """`arr`, or a copy with room for at least n entries (doubling, new entries = fill)."""
    if len(arr) >= n:
        return arr
    grown = np.full(max(n, 2 * len(arr)), fill, arr.dtype)
    grown[: len(arr)] = arr
    return grown


# --------------------------------------------------------------------------- subword

_META = "\u2581"  # SentencePiece's whitespace mark: a literal one in the text is spelled in bytes
_MAX_TRAIN_LINE = 4096  # characters; SentencePiece's trainer skips longer sentences
_PROBE = "Ab 1\t\n  x\u2581\u00e9\U0001f600\r\x00"  # a loaded model must round-trip this


class SubwordTokenizer(Tokenizer):
    """SentencePiece pieces, trained in memory and configured to be lossless for any text.

    Settings: identity normalisation (no NFKC), remove_extra_whitespaces=False,
    add_dummy_prefix=False (text is a stream, not sentences), byte_fallback=True
    (unseen characters become UTF-8 byte pieces), character_coverage=1.0, "\\n"
    as a user-defined piece (the trainer reads lines, so "\\n" never reaches
    it otherwise), no <s>/</s>. A literal U+2581 would decode as a space, so it is
    encoded as its three byte pieces. Minimum vocab_size: 258 (<unk>, "\\n", 256
    bytes) + the distinct characters of the training text (spaces counted as one).
    """

    kind = "subword"
    options = ("vocab_size", "model_type")
    MODEL_TYPES = ("unigram", "bpe")
    DEFAULT_VOCAB_SIZE = 1000

    def __init__(self, model: bytes, model_type: str = "unigram"):
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model)
        except (RuntimeError, TypeError, OSError):
            raise TokenizerError("the SentencePiece model is corrupt; re-train or restore the checkpoint") from None
        self._sp, self._model, self.model_type = sp, bytes(model), model_type
        self._nl = sp.piece_to_id("\n")
        self._meta_ids = [sp.piece_to_id(f"<0x{b:02X}>") for b in _META.encode("utf-8")]
        self.unk_id = sp.unk_id()
        if (
            self._nl == self.unk_id
            or not all(map(sp.is_byte, self._meta_ids))
            or self.decode(self.encode(_PROBE)) != _PROBE
        ):
            raise TokenizerError(
                "this SentencePiece model was not trained by charlm (it is not lossless); re-train the tokenizer"
            )

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @classmethod
    def fit(cls, text: str, vocab_size: int = DEFAULT_VOCAB_SIZE, model_type: str = "unigram") -> SubwordTokenizer:  # type: ignore[override]  # each kind takes its own options
        """Train on `text`; a text too small for `vocab_size` pieces yields fewer (hard_vocab_limit=False)."""
        size = len(text.encode("utf-8", "surrogatepass"))
        return cls.fit_chunks(_chunks(text, 1 << 20, ("\n",)), size=size, vocab_size=vocab_size, model_type=model_type)

    @classmethod
    def fit_chunks(  # type: ignore[override]  # each kind takes its own options
        cls,
        chunks: Iterable[str],
        *,
        size: int | None = None,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        model_type: str = "unigram",
    ) -> SubwordTokenizer:
        """Train on an even sample of the lines: every k-th, k chosen from `size` (the text's UTF-8 bytes,
        or more) so that the sample holds at most MAX_SUBWORD_TRAIN_CHARS characters; only the sample is kept."""
        if size is None:
            raise ValueError("fitting a subword tokenizer on chunks needs size, the text's length in UTF-8 bytes")
        if model_type not in cls.MODEL_TYPES:
            raise TokenizerError(f"unknown subword model {model_type!r}; choose unigram or bpe")
        if not _is_int(vocab_size) or vocab_size < 1:
            raise TokenizerError(f"subword vocab size must be a positive integer, got {vocab_size!r}")
        seen = _CharSet()

        def lines() -> Iterator[str]:
            for piece in token_safe_pieces(chunks, cls.kind):  # whole lines, so each is cut as in the whole text
                seen.update(piece)
                yield from _training_lines(piece)

        sample = list(islice(lines(), 0, None, max(1, -(-size // MAX_SUBWORD_TRAIN_CHARS))))
        chars = seen.chars - {"\n", " "}
        if not chars:
            raise TokenizerError(
                "cannot fit a subword tokenizer on text without characters; pass a longer training text"
            )
        need = 258 + len(chars | {_META})
        if vocab_size < need:
            raise TokenizerError(
                f"subword vocab size {vocab_size} is too small for this "
                f"text: {len(chars | {_META})} distinct characters "
                f"+ 256 byte pieces + <unk> + newline need {need}; use --subword-vocab-size {need} or more"
            )
        model = _train_sentencepiece(sample, vocab_size, model_type)
        return cls(model, model_type)

    def encode(self, text: str) -> list[int]:
        return self._encode_texts([text])[0]

    def encode_array(self, text: str, *, chunk_chars: int = 1 << 15, batch_chunks: int = 32) -> np.ndarray:
        # "\n" is an atomic piece, so texts cut just after a "\n" encode independently;
        # each batch goes to SentencePiece as a list (encoded in C++, in parallel)
        chunks, parts = _chunks(text, chunk_chars, ("\n",)), []
        while batch := list(islice(chunks, batch_chunks)):
            encoded = self._encode_texts(batch)
            parts.append(np.fromiter(chain.from_iterable(encoded), dtype=self.dtype, count=sum(map(len, encoded))))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        encoded = self._sp_encode(texts)
        for i, t in enumerate(texts):
            if _META in t:
                pieces = self._sp_encode(t.split(_META))
                ids = pieces[0]
                for p in pieces[1:]:
                    ids += self._meta_ids + p
                encoded[i] = ids
        return encoded

    def _sp_encode(self, texts: list[str]) -> list[list[int]]:
        try:
            return self._sp.encode(texts)
        except (TypeError, UnicodeError):  # SentencePiece takes UTF-8, which a lone surrogate has none of
            raise TokenizerError(
                "the text holds a lone surrogate code point, which is not Unicode text; "
                "read it with charlm's corpus reader"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        arr = _id_array(ids, self.vocab_size)
        return self._sp.decode(arr.tolist())

    def unknown_units(self, text: str) -> list[str]:
        return []  # byte fallback represents every character

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "model": base64.b64encode(self._model).decode("ascii"),  # the SentencePiece model's bytes
        }

    def _json_dict(self) -> dict[str, Any]:
        # on disk the model is its own file; the JSON keeps its checksum to catch a mismatch
        d = {k: v for k, v in self.to_dict().items() if k != "model"}
        return {**d, "model_file": SUBWORD_MODEL_FILE, "model_sha256": hashlib.sha256(self._model).hexdigest()}

    def _side_files(self) -> dict[str, bytes]:
        return {SUBWORD_MODEL_FILE: self._model}

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> SubwordTokenizer:
        try:
            model = base64.b64decode(d["model"], validate=True)
        except (binascii.Error, ValueError):
            raise TokenizerError(
                "subword tokenizer data is corrupt (model is not base64); re-train or restore it"
            ) from None
        tok = cls(model, d.get("model_type", "unigram"))
        if d.get("vocab_size", tok.vocab_size) != tok.vocab_size:
            raise TokenizerError(
                f"subword tokenizer data is corrupt (vocab_size {d['vocab_size']} but the model has {tok.vocab_size}); "
                "re-train or restore it"
            )
        return tok


# SentencePiece's unigram trainer costs about 12 s per MB here; past this many
# UTF-8 bytes it sees an even sample of the lines (every k-th), which keeps fitting
# under half a minute. Characters only in skipped lines still round-trip (byte fallback).
MAX_SUBWORD_TRAIN_CHARS = 2_000_000


def _train_sentencepiece(sentences: list[str], vocab_size: int, model_type: str) -> bytes:
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=writer,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # tiny corpora: fewer pieces rather than an error
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            byte_fallback=True,
            character_coverage=1.0,
            user_defined_symbols=["\n"],
            required_chars=_META,  # a space must have its own piece, or it would fall back to U+2581's bytes
            unk_surface="\ufffd",
            bos_id=-1,
            eos_id=-1,
            max_sentence_length=4 * _MAX_TRAIN_LINE,
            num_threads=min(os.cpu_count() or 1, 16),
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise TokenizerError(f"SentencePiece could not train: {one_line(str(exc))}") from None
    return writer.getvalue()


def _training_lines(text: str) -> Iterator[str]:
    """The trainer's sentences: the non-empty lines, long ones cut (at a space when one is near)."""
    start = 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        while end - start > _MAX_TRAIN_LINE:
            cut = text.rfind(" ", start + 1, start + _MAX_TRAIN_LINE)
            cut = start + _MAX_TRAIN_LINE if cut < 0 else cut
            yield text[start:cut]
            start = cut
        if end > start:
            yield text[start:end]
        start = end + 1


# --------------------------------------------------------------------------- dispatch and files


def line_start_id(tokenizer: Any) -> int | None:
    """The token read before a text, so that the text is read as the start of a line.

    The one rule for evaluation and generation: the text "\n" if it is a single
    known token (char, subword), else <eos> (word), else <unk>; None when the
    tokenizer has none of them.
    """
    ids = list(tokenizer.encode("\n"))
    if len(ids) == 1 and ids[0] != tokenizer.unk_id:
        return int(ids[0])
    for special in (tokenizer.eos_id, tokenizer.unk_id):
        if special is not None:
            return int(special)
    return None


KINDS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "word": WordTokenizer, "subword": SubwordTokenizer}


def fit_tokenizer(kind: str, text: str, **options: Any) -> Tokenizer:
    """Fit a tokenizer of `kind` on training text; options set to None take their defaults."""
    cls, options = _kind_and_options(kind, options)
    return cls.fit(text, **options)


def fit_tokenizer_stream(kind: str, chunks: Iterable[str], *, size: int | None = None, **options: Any) -> Tokenizer:
    """Fit a tokenizer of `kind` on training text given as chunks (e.g. `corpus.iter_corpus_chunks`), in one pass.

    Gives the tokenizer that `fit_tokenizer` gives on the joined chunks, however they
    are cut. Memory is bounded by the chunk size and the vocabulary (word and subword
    chunks are re-cut at a space or line end, so a word or a line longer than a chunk
    is held whole). `size` is the text's length in UTF-8 bytes, or an upper bound
    such as the files' size on disk; the subword kind needs it to choose, before
    reading, which lines to train on.
    """
    cls, options = _kind_and_options(kind, options)
    return cls.fit_chunks(chunks, size=size, **options)


def _kind_and_options(kind: str, options: dict[str, Any]) -> tuple[type[Tokenizer], dict[str, Any]]:
    cls = KINDS.get(kind)
    if cls is None:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose {', '.join(KINDS)}")
    options = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(options) - set(cls.options))
    if extra:
        takes = ", ".join(cls.options) or "no options"
        raise TokenizerError(
            f"option {', '.join(extra)} does not apply to the {kind} tokenizer (it takes {takes}); leave it out"
        )
    return cls, options


def token_safe_pieces(chunks: Iterable[str], kind: str) -> Iterator[str]:
    """Re-cut text chunks so that no token of `kind` spans two pieces.

    A char token is one character, so any cut is safe. Word tokens never span a
    line end or a space, subword tokens never span a line end ("\\n" is a piece of
    its own), so a piece ends just after the last such separator of what has been
    read and the rest waits for the next chunk. Joined, the pieces equal the chunks.
    """
    if kind == "char":
        yield from (c for c in chunks if c)
        return
    seps = ("\n", " ") if kind == "word" else ("\n",)
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = max(text.rfind(sep) for sep in seps) + 1
        if cut:
            yield text[:cut]
        carry = text[cut:]
    if carry:
        yield carry


def tokenizer_from_dict(d: Any) -> Tokenizer:
    """Rebuild any tokenizer from `to_dict` data, dispatching on d["kind"]."""
    if not isinstance(d, dict):
        raise TokenizerError("tokenizer data is not a JSON object; re-train or restore the checkpoint")
    if d.get("format") != FORMAT:
        raise TokenizerError(
            f"tokenizer format {d.get('format')!r} is not one this charlm reads ({FORMAT}); "
            "use a matching charlm or re-train"
        )
    cls = KINDS.get(d.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise TokenizerError(f"unknown tokenizer kind {d.get('kind')!r}; expected one of {', '.join(KINDS)}")
    try:
        return cls._from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TokenizerError(
            f"{cls.kind} tokenizer data is corrupt ({type(exc).__name__}: {one_line(str(exc))}); re-train or restore it"
        ) from None


def load_tokenizer(directory: str | os.PathLike, *, locate: Callable[[str], Path] | None = None) -> Tokenizer:
    """Read what `Tokenizer.save` wrote in `directory`.

    `locate(name)` says where each file is, for a directory whose files may be in
    transit (a checkpoint directory while a new run is swapped in); default DIR/name.
    """
    directory = Path(directory)
    locate = locate or (lambda name: directory / name)
    path = locate(TOKENIZER_FILE)
    if not path.is_file():
        raise TokenizerError(f"no {TOKENIZER_FILE} in {directory}; pass a checkpoint directory written by charlm train")
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise TokenizerError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path} is corrupt ({one_line(str(exc))}); re-train or restore the checkpoint") from None
    if isinstance(d, dict) and d.get("kind") == SubwordTokenizer.kind and "model" not in d:
        d = {**d, "model": base64.b64encode(_read_model_file(locate(SUBWORD_MODEL_FILE), d)).decode("ascii")}
    return tokenizer_from_dict(d)


def _read_model_file(path: Path, d: dict[str, Any]) -> bytes:
    # a fixed name (tokenizer.model): the JSON never chooses which file is read
    try:
        model = path.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(f"{path} is missing (the subword model); restore it or re-train") from None
    except OSError as exc:
        raise TokenizerError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    if d.get("model_sha256") not in (None, hashlib.sha256(model).hexdigest()):
        raise TokenizerError(
            f"{path} does not match {TOKENIZER_FILE} (checksum differs); restore both files from the same run"
        )
    return model


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory + os.replace: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)  # read the umask (it can only be read by setting it) ...
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # ... so the file gets plain open()'s permissions, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _id_array(ids: Iterable[int], vocab_size: int) -> np.ndarray:
    """Ids as a 1-D int64 array, every one checked to lie in [0, vocab_size)."""
    if isinstance(ids, np.ndarray):
        arr = ids
    elif hasattr(ids, "tolist"):
        arr = np.asarray(ids.tolist())  # a torch tensor (on any device), without importing torch
    else:
        arr = np.asarray(ids if isinstance(ids, Sequence) else list(ids))
    if arr.ndim != 1:
        raise TokenizerError(
            f"ids to decode must form a 1-D sequence, got shape {arr.shape}; pass one sequence at a time"
        )
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TokenizerError(f"ids to decode must be integers, got {arr.dtype}; pass token ids")
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
        raise TokenizerError(
            f"id {arr[bad][0]} is outside the vocabulary of {vocab_size} ids (0..{vocab_size - 1}); "
            "decode ids made with this tokenizer"
        )
    return arr.astype(np.int64, copy=False)


def _chunks(text: str, size: int, seps: tuple[str, ...]) -> Iterator[str]:
    """Consecutive slices of about `size` characters, each ending just after one of `seps`
    (or at the end of the text); a slice grows past `size` to reach the next separator."""
    start, n = 0, len(text)
    while start < n:
        end = start + size
        if end >= n:
            yield text[start:]
            return
        cut = max(text.rfind(s, start, end) for s in seps)
        if cut < 0:
            after = [i for i in (text.find(s, end) for s in seps) if i >= 0]
            cut = min(after) if after else n - 1
        yield text[start : cut + 1]
        start = cut + 1


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
