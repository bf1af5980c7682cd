"""The subword kind: SentencePiece pieces, trained in memory and configured to be lossless for any text."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Any

import numpy as np
import sentencepiece as spm

from charlm.data.tokenizers.base import FORMAT, SUBWORD_MODEL_FILE, Tokenizer, id_array, is_int
from charlm.data.tokenizers.char import CharSet
from charlm.data.tokenizers.pieces import text_chunks, token_safe_pieces
from charlm.errors import TokenizerError, one_line

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
        return cls.fit_chunks(
            text_chunks(text, 1 << 20, ("\n",)), size=size, vocab_size=vocab_size, model_type=model_type
        )

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
        if not is_int(vocab_size) or vocab_size < 1:
            raise TokenizerError(f"subword vocab size must be a positive integer, got {vocab_size!r}")
        seen = CharSet()

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
        chunks, parts = text_chunks(text, chunk_chars, ("\n",)), []
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
        arr = id_array(ids, self.vocab_size)
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
