"""Building an entry of the token cache, and keeping the cache directory in order.

A build fits (unless given a tokenizer) and encodes into a private directory,
writes meta.json last and renames the directory into place; every file goes
through `charlm.fileio`, so each is fsynced. Builders of one key take turns
under a lock; what a killed build left is removed by the next one.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.data.corpus import CACHEDIR_SIGNATURE, CACHEDIR_TAG, CorpusFile, iter_corpus_chunks
from charlm.data.tokcache.entry import FORMAT, FORMAT_VERSION, META, TRAIN, VALID, tokenizer_sha
from charlm.data.tokenizers import Tokenizer, fit_tokenizer_stream, token_safe_pieces
from charlm.errors import ConfigError, StorageError
from charlm.fileio import atomic_open, atomic_write_bytes, current_umask, fsync_dir

CHUNK_BYTES = 1 << 18  # read and encode 256 KiB of text at a time: measured fastest (it stays in cache)

Progress = Callable[[str, int, int], None]  # (phase, done bytes, total bytes)


@dataclass(frozen=True)
class Source:
    """Where the text of each part is: the corpus files, split at byte `cut`, or separate validation files."""

    files: list[CorpusFile]
    valid_files: list[CorpusFile]
    cut: int
    errors: str

    def train_chunks(self, on_read: Callable[[int], None]) -> Iterator[str]:
        return iter_corpus_chunks(self.files, self.errors, CHUNK_BYTES, 0, self.cut, on_read)

    def valid_chunks(self, on_read: Callable[[int], None]) -> Iterator[str]:
        if self.valid_files:
            return iter_corpus_chunks(self.valid_files, self.errors, CHUNK_BYTES, 0, None, on_read)
        return iter_corpus_chunks(self.files, self.errors, CHUNK_BYTES, self.cut, None, on_read)

    @property
    def valid_size(self) -> int:
        return sum(f.size for f in self.valid_files) if self.valid_files else sum(f.size for f in self.files) - self.cut


@dataclass(frozen=True)
class Fit:
    """The tokenizer to fit on the training part: a kind and its options."""

    kind: str
    options: dict[str, Any]


@dataclass
class _Reading:
    """Told of every block read: reports progress under one phase, and now and then trims the heap."""

    progress: Progress | None
    phase: str
    total: int
    done: int = 0

    def __call__(self, n: int) -> None:
        if _malloc_trim is not None and (self.done + n) // _TRIM_EVERY > self.done // _TRIM_EVERY:
            _malloc_trim(0)
        self.done += n
        if self.progress is not None:
            self.progress(self.phase, self.done, self.total)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim (None elsewhere). Each chunk's temporaries, a few hundred kB each, fragment glibc's
    heap, whose freed pages then stay resident: a 1 GB word corpus peaked at 510 MB instead of ~120 MB.

    Looked up here rather than taken from `charlm.runtime` (beside its `retain_freed_memory`): the data room
    reads and tokenizes without importing torch, and the runtime room imports it.
    """
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()
_TRIM_EVERY = 32 << 20  # bytes read between two trims: no measurable cost


def build_entry(
    cache_dir: Path, key: str, source: Source, how: Tokenizer | Fit, progress: Progress | None
) -> tuple[dict[str, Any], Tokenizer]:
    """Fit (unless given a tokenizer) and encode into a private directory, then rename it to `key`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir))
    try:
        if isinstance(how, Fit):
            fitting = _Reading(progress, "fitting", source.cut)
            tok = fit_tokenizer_stream(how.kind, source.train_chunks(fitting), size=source.cut, **how.options)
        else:
            tok = how
        tok.save(tmp)
        encoding = _Reading(progress, "encoding", source.cut + source.valid_size)
        train = _write_ids(tmp / TRAIN, tok, source.train_chunks(encoding))
        valid = _write_ids(tmp / VALID, tok, source.valid_chunks(encoding), figures=True)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "key": key,
            "dtype": str(tok.dtype),
            "vocab_size": tok.vocab_size,
            "tokenizer_sha256": tokenizer_sha(tok),
            "train": train,
            "valid": valid,
            "source": {  # for people reading the cache; opening never trusts it
                "files": [str(f.path) for f in source.files],
                "valid_files": [str(f.path) for f in source.valid_files],
                "split_offset": source.cut,
                "encoding_errors": source.errors,
            },
        }
        atomic_write_bytes(tmp / META, json.dumps(meta, indent=1).encode("utf-8"))
        _commit(tmp, cache_dir / key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta, tok


def _commit(tmp: Path, entry: Path) -> None:
    """Put a complete, synced build directory in place of `entry` (which, if there, failed its checks)."""
    fsync_dir(tmp)
    os.chmod(tmp, 0o777 & ~current_umask())  # a shared cache's entry gets mkdir's permissions, not mkdtemp's 0700
    if entry.exists():  # out of the way first: rename, then delete, so a kill never leaves half an entry
        trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}")
        os.rename(entry, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(tmp, entry)
    fsync_dir(entry.parent)


def _write_ids(path: Path, tok: Tokenizer, chunks: Iterator[str], figures: bool = False) -> dict[str, Any]:
    """Encode text chunk by chunk into a file of little-endian ids: its length and checksum, and with
    `figures` the text's characters, UTF-8 bytes and out-of-vocabulary tokens."""
    h = hashlib.sha256()
    tokens = chars = nbytes = oov = 0
    dtype = tok.dtype.newbyteorder("<")
    with atomic_open(path) as f:
        for piece in token_safe_pieces(chunks, tok.kind):
            ids, unknown = tok.encode_with_oov(piece) if figures else (tok.encode_array(piece), 0)
            ids = np.ascontiguousarray(ids, dtype=dtype)
            f.write(ids.data)
            h.update(ids.data)
            tokens, oov = tokens + len(ids), oov + unknown
            if figures:
                chars, nbytes = chars + len(piece), nbytes + len(piece.encode("utf-8", "surrogatepass"))
    written = {"tokens": tokens, "sha256": h.hexdigest()}
    return {**written, "chars": chars, "bytes": nbytes, "oov": oov} if figures else written


@contextmanager
def cache_errors(cache_dir: Path) -> Iterator[None]:
    """A failed file operation in the cache becomes one line naming the directory and the ways out."""
    try:
        yield
    except (OSError, StorageError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc.reason
        raise ConfigError(
            f"cannot write the token cache in {cache_dir} ({reason}); "
            "make it writable, free some space or choose another cache directory"
        ) from None


def make_cache_dir(cache_dir: Path) -> None:
    """Create the cache directory, tagged so that backup tools and corpus expansion skip it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = cache_dir / CACHEDIR_TAG
    if not tag.exists():
        atomic_write_bytes(
            tag, CACHEDIR_SIGNATURE + b"\n# a charlm token cache: tokenized corpora, rebuilt when missing\n"
        )


@contextmanager
def locked(cache_dir: Path, key: str) -> Iterator[None]:
    """Hold the lock of one key: builders of the same entry take turns (the lock dies with its process)."""
    fd = _open_lock(cache_dir, key)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_stale(cache_dir: Path, own_key: str) -> None:
    """Remove what killed builds left: .build-/.trash- directories whose key nobody holds the lock of."""
    for leftover in [*cache_dir.glob(".build-*"), *cache_dir.glob(".trash-*")]:
        key = leftover.name.split("-")[1]
        if key == own_key:  # ours: we hold its lock
            shutil.rmtree(leftover, ignore_errors=True)
            continue
        fd = _open_lock(cache_dir, key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(leftover, ignore_errors=True)
        except BlockingIOError:  # being built right now
            pass
        finally:
            os.close(fd)


def _open_lock(cache_dir: Path, key: str) -> int:
    return os.open(cache_dir / f".lock-{key}", os.O_RDWR | os.O_CREAT, 0o644)
