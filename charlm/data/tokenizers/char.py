"""The char kind: one id per character, encoded and decoded through numpy tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from charlm.data.tokenizers.base import FORMAT, Tokenizer, id_array
from charlm.errors import TokenizerError


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
        seen = CharSet()
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
        arr = id_array(ids, self.vocab_size)
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


class CharSet:
    """The distinct characters of a stream of text, gathered at memory speed once the ASCII ones are known."""

    def __init__(self) -> None:
        self.chars: set[str] = set()
        self._known_ascii = b""  # bytes.translate deletes these, so only new or non-ASCII characters are left

    def update(self, text: str) -> None:
        rest = text.encode("utf-8", "surrogatepass").translate(None, self._known_ascii)
        if rest:
            self.chars.update(rest.decode("utf-8", "surrogatepass"))
            self._known_ascii = bytes(sorted(ord(c) for c in self.chars if ord(c) < 128))
