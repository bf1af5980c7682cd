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

`encode_array` is the vectorised path for whole corpora; it returns the smallest
unsigned dtype that holds every id (`id_dtype`). Tokenizers are plain data:
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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, islice, repeat
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import sentencepiece as spm

from charlm.errors import TokenizerError

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

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text -> ids; the plain reference path (see `encode_array` for whole corpora)."""

    def encode_array(self, text: str) -> np.ndarray:
        """Text -> ids as a 1-D array of `self.dtype`, equal to `encode(text)`."""
        return np.asarray(self.encode(text), dtype=self.dtype)

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
            raise TokenizerError(f"tokenizer data is of kind {tok.kind!r}, not {cls.kind!r}; load it with tokenizer_from_dict")
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
            raise TokenizerError(f"cannot save the tokenizer in {directory}: {exc.strerror}; check that it is writable") from None

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
            raise TokenizerError("char tokenizer data is corrupt (chars must be distinct single characters in order); re-train or restore it")
        self._chars = chars
        self._stoi = {c: i + 1 for i, c in enumerate(chars)}
        codes = np.array([ord(c) for c in chars], dtype=np.int64)
        # table[code] -> id for every code up to the largest known one; the extra last entry is <unk>
        self._table = np.zeros(int(codes.max(initial=-1)) + 2, dtype=self.dtype)
        self._table[codes] = np.arange(1, len(chars) + 1)
        self._codes = np.concatenate([[0xFFFD], codes]).astype("<u4")  # id -> code point; <unk> -> U+FFFD

    @property
    def vocab_size(self) -> int:
        return len(self._chars) + 1

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        if not text:
            raise TokenizerError("cannot fit a char tokenizer on empty text; pass a training text with some characters")
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        get = self._stoi.get
        return [get(c, 0) for c in text]

    def encode_array(self, text: str, *, chunk_chars: int = 1 << 20) -> np.ndarray:
        out = np.empty(len(text), dtype=self.dtype)
        for start in range(0, len(text), chunk_chars):
            codes = _code_points(text[start : start + chunk_chars])
            out[start : start + len(codes)] = self._lookup(codes)
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
        return self._table[np.minimum(codes, len(self._table) - 1)]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "chars": list(self._chars)}  # id = position + 1

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(d["chars"])


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


# --------------------------------------------------------------------------- word

# punct: words (with an inner apostrophe: don't, l'homme) or single punctuation marks;
# the special tokens come first so that "<unk>" stays one token
_PUNCT = r"<unk>|<eos>|\w+(?:'\w+)?|[^\w\s]"
_PUNCT_RE = re.compile(_PUNCT)
_LINE_TOKEN_RE = {"whitespace": re.compile(r"\n|\S+"), "punct": re.compile(r"\n|" + _PUNCT)}
_NUL = "\x00"  # fast path: stands for "\n" while str.split() runs, when a chunk holds no NUL


class WordTokenizer(Tokenizer):
    """One id per word: <unk> (0), <eos> (1, a line end), then words, most frequent first.

    pretokenize="whitespace" splits lines on whitespace, for corpora that are
    already tokenized (PTB, WikiText); "punct" also splits punctuation off words
    (regex `\\w+('\\w+)?|[^\\w\\s]`), for raw text. Decoding joins the words of a
    line with single spaces, so the round trip is exact only for whitespace-
    normalised text (and, with punct, normalises the spacing around punctuation).
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
            raise TokenizerError("word tokenizer data is corrupt (vocab must start with <unk>, <eos> and hold distinct words); re-train or restore it")
        self.pretokenize = pretokenize
        self._itos = vocab
        self._stoi = {w: i for i, w in enumerate(vocab)}
        self._surface = [w if i != self.eos_id else "\n" for i, w in enumerate(vocab)]
        self._split = str.split if pretokenize == "whitespace" else _PUNCT_RE.findall
        self._line_token_re = _LINE_TOKEN_RE[pretokenize]
        self._nl_lookup = {**self._stoi, "\n": self.eos_id}  # for tokens found by _line_token_re
        self._nul_lookup = {**self._stoi, _NUL: self.eos_id}  # for the NUL fast path

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @classmethod
    def fit(cls, text: str, min_freq: int = 1, max_size: int | None = None, pretokenize: str = "whitespace") -> WordTokenizer:
        """Keep words seen at least `min_freq` times, at most `max_size` ids in all (specials included)."""
        if not _is_int(min_freq) or min_freq < 1:
            raise TokenizerError(f"min_freq must be an integer of at least 1, got {min_freq!r}")
        if max_size is not None and (not _is_int(max_size) or max_size < 3):
            raise TokenizerError(f"max vocabulary size must be at least 3 (<unk>, <eos> and a word), got {max_size!r}")
        if pretokenize not in cls.PRETOKENIZE:
            raise TokenizerError(f"unknown pretokenize {pretokenize!r}; choose whitespace or punct")
        split = str.split if pretokenize == "whitespace" else _PUNCT_RE.findall
        counts: Counter[str] = Counter()
        for chunk in _chunks(text, 1 << 20, ("\n", " ")):
            counts.update(split(chunk))
        for special in (UNK, EOS):
            counts.pop(special, None)
        words = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        if not words:
            what = "no words" if not counts else f"no word occurs {min_freq} times or more"
            raise TokenizerError(f"cannot fit a word tokenizer: the training text has {what}; pass more text or lower --min-freq")
        if max_size is not None:
            words = words[: max_size - 2]
        return cls([UNK, EOS, *words], pretokenize)

    def encode(self, text: str) -> list[int]:
        get, ids = self._stoi.get, []
        for i, line in enumerate(text.split("\n")):
            if i:
                ids.append(self.eos_id)
            ids.extend(get(w, self.unk_id) for w in self._split(line))
        return ids

    def encode_array(self, text: str, *, chunk_chars: int = 1 << 20) -> np.ndarray:
        parts = [self._encode_chunk(chunk) for chunk in _chunks(text, chunk_chars, ("\n", " "))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)

    def _encode_chunk(self, chunk: str) -> np.ndarray:
        if self.pretokenize == "whitespace" and _NUL not in chunk:
            tokens, lookup = chunk.replace("\n", f" {_NUL} ").split(), self._nul_lookup  # ~2x faster than the regex
        else:
            tokens, lookup = self._line_token_re.findall(chunk), self._nl_lookup
        return np.fromiter(map(lookup.get, tokens, repeat(self.unk_id)), dtype=self.dtype, count=len(tokens))

    def decode(self, ids: Iterable[int]) -> str:
        arr = _id_array(ids, self.vocab_size)
        surface = self._surface
        text = " ".join([surface[i] for i in arr.tolist()])
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
        if self._nl == self.unk_id or not all(map(sp.is_byte, self._meta_ids)) or self.decode(self.encode(_PROBE)) != _PROBE:
            raise TokenizerError("this SentencePiece model was not trained by charlm (it is not lossless); re-train the tokenizer")

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @classmethod
    def fit(cls, text: str, vocab_size: int = DEFAULT_VOCAB_SIZE, model_type: str = "unigram") -> SubwordTokenizer:
        """Train on `text`; a text too small for `vocab_size` pieces yields fewer (hard_vocab_limit=False)."""
        if model_type not in cls.MODEL_TYPES:
            raise TokenizerError(f"unknown subword model {model_type!r}; choose unigram or bpe")
        if not _is_int(vocab_size) or vocab_size < 1:
            raise TokenizerError(f"subword vocab size must be a positive integer, got {vocab_size!r}")
        chars = set(text) - {"\n", " "}
        if not chars:
            raise TokenizerError("cannot fit a subword tokenizer on text without characters; pass a longer training text")
        need = 258 + len(chars | {_META})
        if vocab_size < need:
            raise TokenizerError(
                f"subword vocab size {vocab_size} is too small for this text: {len(chars | {_META})} distinct characters "
                f"+ 256 byte pieces + <unk> + newline need {need}; use --subword-vocab-size {need} or more"
            )
        model = _train_sentencepiece(text, vocab_size, model_type)
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
            raise TokenizerError("the text holds a lone surrogate code point, which is not Unicode text; read it with charlm's corpus reader") from None

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
            raise TokenizerError("subword tokenizer data is corrupt (model is not base64); re-train or restore it") from None
        tok = cls(model, d.get("model_type", "unigram"))
        if d.get("vocab_size", tok.vocab_size) != tok.vocab_size:
            raise TokenizerError(f"subword tokenizer data is corrupt (vocab_size {d['vocab_size']} but the model has {tok.vocab_size}); re-train or restore it")
        return tok


# SentencePiece's unigram trainer costs about 12 s per MB here; past this many
# characters it sees an even sample of the lines (every k-th), which keeps fitting
# under half a minute. Characters only in skipped lines still round-trip (byte fallback).
MAX_SUBWORD_TRAIN_CHARS = 2_000_000


def _train_sentencepiece(text: str, vocab_size: int, model_type: str) -> bytes:
    writer = io.BytesIO()
    stride = max(1, -(-len(text) // MAX_SUBWORD_TRAIN_CHARS))
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=islice(_training_lines(text), 0, None, stride),
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
        raise TokenizerError(f"SentencePiece could not train: {_one_line(str(exc))}") from None
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
    cls = KINDS.get(kind)
    if cls is None:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose {', '.join(KINDS)}")
    options = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(options) - set(cls.options))
    if extra:
        takes = ", ".join(cls.options) or "no options"
        raise TokenizerError(f"option {', '.join(extra)} does not apply to the {kind} tokenizer (it takes {takes}); leave it out")
    return cls.fit(text, **options)


def tokenizer_from_dict(d: Any) -> Tokenizer:
    """Rebuild any tokenizer from `to_dict` data, dispatching on d["kind"]."""
    if not isinstance(d, dict):
        raise TokenizerError("tokenizer data is not a JSON object; re-train or restore the checkpoint")
    if d.get("format") != FORMAT:
        raise TokenizerError(f"tokenizer format {d.get('format')!r} is not one this charlm reads ({FORMAT}); use a matching charlm or re-train")
    cls = KINDS.get(d.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise TokenizerError(f"unknown tokenizer kind {d.get('kind')!r}; expected one of {', '.join(KINDS)}")
    try:
        return cls._from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TokenizerError(f"{cls.kind} tokenizer data is corrupt ({type(exc).__name__}: {_one_line(str(exc))}); re-train or restore it") from None


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
        raise TokenizerError(f"{path} is corrupt ({_one_line(str(exc))}); re-train or restore the checkpoint") from None
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
        raise TokenizerError(f"{path} does not match {TOKENIZER_FILE} (checksum differs); restore both files from the same run")
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
        raise TokenizerError(f"ids to decode must form a 1-D sequence, got shape {arr.shape}; pass one sequence at a time")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TokenizerError(f"ids to decode must be integers, got {arr.dtype}; pass token ids")
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
        raise TokenizerError(f"id {arr[bad][0]} is outside the vocabulary of {vocab_size} ids (0..{vocab_size - 1}); decode ids made with this tokenizer")
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


def _one_line(s: str) -> str:
    return " ".join(s.split())
