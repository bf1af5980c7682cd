"""One entry of the token cache: its files, and reading it back only when every check passes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.data.tokenizers import Tokenizer, load_tokenizer
from charlm.errors import CharlmError

FORMAT, FORMAT_VERSION = "charlm-tokens", 1
TRAIN, VALID, META = "train.bin", "valid.bin", "meta.json"
_HASH_BLOCK = 1 << 22


@dataclass(frozen=True)
class TokenizedCorpus:
    """A corpus's training and validation ids as read-only memory maps, and what they were made with."""

    tokenizer: Tokenizer
    train: np.ndarray  # 1-D np.memmap of tokenizer.dtype
    valid: np.ndarray  # 1-D np.memmap, the held-out ids
    valid_chars: int  # characters of the validation text,
    valid_bytes: int  # its UTF-8 bytes,
    valid_oov: int  # and its tokens outside the vocabulary: bits per char/byte and OOV rate from the ids alone
    fingerprint: str  # identity of the training ids (a resumed run checks it)
    valid_fingerprint: str  # identity of the validation ids (a resumed run resets its best loss when it changes)
    path: Path  # the cache entry
    reused: bool  # True when nothing had to be read, fitted or encoded


def open_entry(entry: Path, key: str, tokenizer: Tokenizer | None) -> TokenizedCorpus | None:
    """The entry's ids, or None when it is missing, incomplete, corrupt or holds another tokenizer."""
    try:
        meta = json.loads((entry / META).read_bytes())
        expected = {"format": FORMAT, "version": FORMAT_VERSION, "key": key}
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
            return None
        tok = load_tokenizer(entry)
        if tokenizer_sha(tok) != meta["tokenizer_sha256"] or str(tok.dtype) != meta["dtype"]:
            return None
        if tokenizer is not None and tok != tokenizer:
            return None
        for name, part in ((TRAIN, meta["train"]), (VALID, meta["valid"])):
            if not _intact(entry / name, part["tokens"] * tok.dtype.itemsize, part["sha256"]):
                return None
        return mapped(entry, meta, tok, reused=True)
    except (OSError, ValueError, KeyError, TypeError, CharlmError):  # anything unreadable is rebuilt
        return None


def mapped(entry: Path, meta: dict[str, Any], tok: Tokenizer, reused: bool) -> TokenizedCorpus:
    """The entry's ids as memory maps, described by its meta.json data."""
    train, valid = meta["train"], meta["valid"]
    return TokenizedCorpus(
        tokenizer=tok,
        train=_memmap(entry / TRAIN, tok.dtype, train["tokens"]),
        valid=_memmap(entry / VALID, tok.dtype, valid["tokens"]),
        valid_chars=int(valid["chars"]),
        valid_bytes=int(valid["bytes"]),
        valid_oov=int(valid["oov"]),
        fingerprint=train["sha256"][:16],
        valid_fingerprint=valid["sha256"][:16],
        path=entry,
        reused=reused,
    )


def hash_file(h: Any, path: Path) -> None:
    """Feed the file's bytes to the hash `h`, read in blocks with plain reads (a memmap would fill the RSS)."""
    block = bytearray(_HASH_BLOCK)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(block):
            h.update(memoryview(block)[:n])


def _intact(path: Path, size: int, sha256: str) -> bool:
    """Whether the file has this size and checksum."""
    if path.stat().st_size != size:
        return False
    h = hashlib.sha256()
    hash_file(h, path)
    return h.hexdigest() == sha256


def _memmap(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if n == 0:  # mmap cannot map an empty file; the caller refuses an empty part anyway
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", shape=(n,))


def tokenizer_sha(tok: Tokenizer) -> str:
    """The identity of a tokenizer: SHA-256 of its data."""
    return hashlib.sha256(json.dumps(tok.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()
