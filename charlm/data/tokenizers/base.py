"""The interface every tokenizer kind implements, its file names and the id checks they share."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from charlm.errors import StorageError, TokenizerError
from charlm.fileio import atomic_write_bytes

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
        # the package's face: the table of kinds imports this module, so it is looked up when called
        from charlm.data.tokenizers import tokenizer_from_dict

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
        """Write directory/tokenizer.json (and any side file), each atomically (`charlm.fileio`)."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, data in self._side_files().items():
                atomic_write_bytes(directory / name, data)
            atomic_write_bytes(directory / TOKENIZER_FILE, json.dumps(self._json_dict(), indent=1).encode() + b"\n")
        except (OSError, StorageError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc.reason
            raise TokenizerError(
                f"cannot save the tokenizer in {directory}: {reason}; check that it is writable"
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


def id_array(ids: Iterable[int], vocab_size: int) -> np.ndarray:
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


def is_int(x: Any) -> bool:
    """An integer option (numpy's too), but not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
