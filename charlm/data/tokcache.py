"""Tokenized corpora on disk: ids written once, streaming, then read through a memory map.

A trainer calls `tokenized_corpus(...)` and gets the training and validation ids as
read-only `np.memmap`s in the smallest unsigned dtype the vocabulary allows (1 byte
per character for a char model, not 8), so a corpus many times larger than memory
trains with a flat footprint, and a rerun or a --resume on the same corpus skips
reading, fitting and encoding.

    cache_dir/
      CACHEDIR.TAG       marks a cache: corpus directory expansion and backup tools skip it
      <key>/             one entry per corpus content, split and tokenizer (see "Key")
        train.bin        training ids, little-endian, dtype in meta.json
        valid.bin        validation ids
        tokenizer.json   the tokenizer that made them (+ tokenizer.model for subwords)
        meta.json        written last: dtype, lengths, SHA-256 of each .bin, validation figures
      .build-<key>-*/    an entry being built; renamed to <key>/ once complete
      .lock-<key>        held (flock) by the one process building <key>

Split. With `valid` files the corpus is all training text. Otherwise the last
`valid_fraction` is held out, cut by `corpus.split_offset`: at the last line start
within 1% (of the total size) before byte floor(size * (1 - valid_fraction)) of the
corpus files laid end to end (sizes on disk, BOM and CRLF included), else at that
byte moved back to a character. The cut depends only on the files' bytes, never on
chunk sizes. The tokenizer is fitted on the training part only.

Key. SHA-256 of: the content of every corpus file and validation file, in order
(each file's bytes with its size; hashed at ~1 GB/s on every call, so a changed
file is always noticed, even with the same size and time stamp), the split
(valid_fraction, when no valid files), the tokenizer kind and options (or, for a
given tokenizer, its data), the encoding-error mode and `FORMAT_VERSION`. A
resumed run passes the tokenizer its checkpoint holds together with the same
level and options: the entry fitted for those is reused when it holds that very
tokenizer, else the ids are re-encoded with it into an entry of its own.

Integrity. Every open checks meta.json, the tokenizer's checksum, and each .bin's
size and SHA-256 (read in blocks: ~1 s per GB). Anything truncated, tampered,
half-written or unreadable is rebuilt, never trusted. A build writes into a
private directory, fsyncs every file, writes meta.json last and renames the
directory into place; builders of one key take turns under a lock, so the second
reuses the first's entry; leftovers of a killed build are removed by the next one.

Memory is bounded by the chunk size and the vocabulary, never by the corpus:
text is read in blocks of `CHUNK_BYTES`, fitted and encoded chunk by chunk, and
the ids are written as they come. Reading a memmap maps pages on demand: a
trainer should take windows of it (`np.asarray(train[i:j])`), not convert it whole.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.data.corpus import (
    CACHEDIR_SIGNATURE,
    CACHEDIR_TAG,
    CorpusFile,
    PathLike,
    corpus_files,
    iter_corpus_chunks,
    split_offset,
)
from charlm.data.tokenizers import KINDS, Tokenizer, fit_tokenizer_stream, load_tokenizer, token_safe_pieces
from charlm.errors import CharlmError, ConfigError, CorpusError, TokenizerError

FORMAT, FORMAT_VERSION = "charlm-tokens", 1
TRAIN, VALID, META = "train.bin", "valid.bin", "meta.json"
CHUNK_BYTES = 1 << 18  # read and encode 256 KiB of text at a time: measured fastest (it stays in cache)
_HASH_BLOCK = 1 << 22

Progress = Callable[[str, int, int], None]  # (phase, done bytes, total bytes)


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


def tokenized_corpus(
    corpus: Sequence[PathLike],
    *,
    valid: Sequence[PathLike] = (),
    valid_fraction: float = 0.1,
    level: str = "char",
    tokenizer_options: dict[str, Any] | None = None,
    tokenizer: Tokenizer | None = None,
    encoding_errors: str = "strict",
    cache_dir: PathLike,
    exclude: Sequence[PathLike] = (),
    progress: Progress | None = None,
) -> TokenizedCorpus:
    """The ids of a corpus, from the cache in `cache_dir` or tokenized into it (see the module docstring).

    `corpus`/`valid`: files and directories as `read_corpus` takes them; `exclude`:
    paths directory expansion skips (pass the run's output directory; `cache_dir`
    is always skipped). `level` and `tokenizer_options` choose the tokenizer to fit
    on the training part; a given `tokenizer` (a resumed run) is used as it is.
    `progress(phase, done, total)` is called as the one-time passes read the
    corpus ("fitting", then "encoding"; bytes on disk), never for a reused entry.
    Raises `CorpusError` for bad corpus files, `ConfigError` for a split that
    leaves a part (nearly) empty or a cache directory that cannot be written.
    """
    cache_dir = Path(cache_dir)
    level = tokenizer.kind if tokenizer is not None else level
    if level not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {level!r}; choose {', '.join(KINDS)}")
    if not valid and not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid fraction must be in (0, 1), got {valid_fraction}; pass e.g. --valid-fraction 0.1")
    skip = [*exclude, cache_dir]
    files = corpus_files(corpus, exclude=skip)
    valid_files = corpus_files(valid, exclude=skip) if valid else []
    cut = sum(f.size for f in files) if valid_files else split_offset(files, valid_fraction)
    if cut == 0:
        raise ConfigError(
            f"valid fraction {valid_fraction} leaves no training text before the cut; "
            "lower --valid-fraction or use a longer corpus"
        )
    source = _Source(files, valid_files, cut, encoding_errors)
    options = {k: v for k, v in sorted((tokenizer_options or {}).items()) if v is not None}
    content = _content_hash(files, valid_files)
    split = None if valid_files else valid_fraction
    fit_key = _key(content, split, {"fit": level, "options": options}, encoding_errors)
    keys = [fit_key]
    if tokenizer is not None:  # the entry fitted for these options serves when it holds this very tokenizer
        keys.append(_key(content, split, {"tokenizer": _tokenizer_sha(tokenizer)}, encoding_errors))
    for key in keys:
        if (found := _open_entry(cache_dir / key, key, tokenizer)) is not None:
            return _checked(found)
    key = keys[-1]
    with _cache_errors(cache_dir):
        _make_cache_dir(cache_dir)
        with _locked(cache_dir, key):
            _remove_stale(cache_dir, key)
            if (found := _open_entry(cache_dir / key, key, tokenizer)) is not None:  # built while we waited
                return _checked(found)
            meta, tok = _build(cache_dir, key, source, tokenizer or _Fit(level, options), progress)
    return _checked(_mapped(cache_dir / key, meta, tok, reused=False))


def shard(ids: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s contiguous 1/world_size of the ids (equal sizes, the remainder dropped): a view, no copy."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    n = len(ids) // world_size
    return ids[rank * n : (rank + 1) * n]


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/charlm/tokens, or ~/.cache/charlm/tokens: a cache shared by every run of this user."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charlm" / "tokens"


# --------------------------------------------------------------------------- reading an entry


def _open_entry(entry: Path, key: str, tokenizer: Tokenizer | None) -> TokenizedCorpus | None:
    """The entry's ids, or None when it is missing, incomplete, corrupt or holds another tokenizer."""
    try:
        meta = json.loads((entry / META).read_bytes())
        expected = {"format": FORMAT, "version": FORMAT_VERSION, "key": key}
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
            return None
        tok = load_tokenizer(entry)
        if _tokenizer_sha(tok) != meta["tokenizer_sha256"] or str(tok.dtype) != meta["dtype"]:
            return None
        if tokenizer is not None and tok != tokenizer:
            return None
        for name, part in ((TRAIN, meta["train"]), (VALID, meta["valid"])):
            if not _intact(entry / name, part["tokens"] * tok.dtype.itemsize, part["sha256"]):
                return None
        return _mapped(entry, meta, tok, reused=True)
    except (OSError, ValueError, KeyError, TypeError, CharlmError):  # anything unreadable is rebuilt
        return None


def _mapped(entry: Path, meta: dict[str, Any], tok: Tokenizer, reused: bool) -> TokenizedCorpus:
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


def _intact(path: Path, size: int, sha256: str) -> bool:
    """Whether the file has this size and checksum (read with plain reads: a memmap would fill the RSS)."""
    if path.stat().st_size != size:
        return False
    h, block = hashlib.sha256(), bytearray(_HASH_BLOCK)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(block):
            h.update(memoryview(block)[:n])
    return h.hexdigest() == sha256


def _memmap(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if n == 0:  # mmap cannot map an empty file; _checked refuses an empty part anyway
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", shape=(n,))


def _checked(found: TokenizedCorpus) -> TokenizedCorpus:
    """The entry, once both parts are known to hold enough tokens to train and validate."""
    if len(found.train) < 2:
        raise ConfigError(
            f"the training text has {len(found.train)} tokens; use a longer corpus or a smaller --valid-fraction"
        )
    if len(found.valid) < 2:
        raise ConfigError(
            "the validation text has fewer than 2 tokens; use a larger --valid-fraction or a longer --valid file"
        )
    return found


# --------------------------------------------------------------------------- building an entry


@dataclass(frozen=True)
class _Source:
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
class _Fit:
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
    heap, whose freed pages then stay resident: a 1 GB word corpus peaked at 510 MB instead of ~120 MB."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()
_TRIM_EVERY = 32 << 20  # bytes read between two trims: no measurable cost


def _build(
    cache_dir: Path, key: str, source: _Source, how: Tokenizer | _Fit, progress: Progress | None
) -> tuple[dict[str, Any], Tokenizer]:
    """Fit (unless given a tokenizer) and encode into a private directory, then rename it to `key`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir))
    try:
        if isinstance(how, _Fit):
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
            "tokenizer_sha256": _tokenizer_sha(tok),
            "train": train,
            "valid": valid,
            "source": {  # for people reading the cache; opening never trusts it
                "files": [str(f.path) for f in source.files],
                "valid_files": [str(f.path) for f in source.valid_files],
                "split_offset": source.cut,
                "encoding_errors": source.errors,
            },
        }
        _write_synced(tmp / META, json.dumps(meta, indent=1).encode("utf-8"))
        _commit(tmp, cache_dir / key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta, tok


def _commit(tmp: Path, entry: Path) -> None:
    """Put a complete, synced build directory in place of `entry` (which, if there, failed its checks)."""
    _fsync_dir(tmp)
    umask = os.umask(0)  # read the umask (it can only be read by setting it) ...
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # ... so a shared cache's entry gets mkdir's permissions, not mkdtemp's 0700
    if entry.exists():  # out of the way first: rename, then delete, so a kill never leaves half an entry
        trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}")
        os.rename(entry, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(tmp, entry)
    _fsync_dir(entry.parent)


def _write_ids(path: Path, tok: Tokenizer, chunks: Iterator[str], figures: bool = False) -> dict[str, Any]:
    """Encode text chunk by chunk into a file of little-endian ids: its length and checksum, and with
    `figures` the text's characters, UTF-8 bytes and out-of-vocabulary tokens."""
    h = hashlib.sha256()
    tokens = chars = nbytes = oov = 0
    dtype = tok.dtype.newbyteorder("<")
    with path.open("wb") as f:
        for piece in token_safe_pieces(chunks, tok.kind):
            ids, unknown = tok.encode_with_oov(piece) if figures else (tok.encode_array(piece), 0)
            ids = np.ascontiguousarray(ids, dtype=dtype)
            f.write(ids.data)
            h.update(ids.data)
            tokens, oov = tokens + len(ids), oov + unknown
            if figures:
                chars, nbytes = chars + len(piece), nbytes + len(piece.encode("utf-8", "surrogatepass"))
        f.flush()
        os.fsync(f.fileno())
    written = {"tokens": tokens, "sha256": h.hexdigest()}
    return {**written, "chars": chars, "bytes": nbytes, "oov": oov} if figures else written


# --------------------------------------------------------------------------- keys


def _content_hash(files: Sequence[CorpusFile], valid_files: Sequence[CorpusFile]) -> str:
    """SHA-256 over every file's size and bytes, corpus then validation files (read in blocks)."""
    h, block = hashlib.sha256(), bytearray(_HASH_BLOCK)
    for part in (files, valid_files):
        h.update(len(part).to_bytes(8, "little"))
        for f in part:
            h.update(f.size.to_bytes(8, "little"))
            try:
                with f.path.open("rb", buffering=0) as fh:
                    while n := fh.readinto(block):
                        h.update(memoryview(block)[:n])
            except OSError as exc:
                raise CorpusError(f"cannot read {f.path}: {exc.strerror}; check its permissions") from None
    return h.hexdigest()


def _key(content: str, valid_fraction: float | None, tokenizer: dict[str, Any], errors: str) -> str:
    desc = {
        "format": FORMAT_VERSION,
        "content": content,
        "valid_fraction": valid_fraction,
        "tokenizer": tokenizer,
        "errors": errors,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def _tokenizer_sha(tok: Tokenizer) -> str:
    return hashlib.sha256(json.dumps(tok.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the cache directory


@contextmanager
def _cache_errors(cache_dir: Path) -> Iterator[None]:
    """An OSError while writing the cache becomes one line naming the directory."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(
            f"cannot write the token cache in {cache_dir} ({exc.strerror}); "
            "make it writable, free some space or choose another cache directory"
        ) from None


def _make_cache_dir(cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = cache_dir / CACHEDIR_TAG
    if not tag.exists():
        _write_synced(tag, CACHEDIR_SIGNATURE + b"\n# a charlm token cache: tokenized corpora, rebuilt when missing\n")


@contextmanager
def _locked(cache_dir: Path, key: str) -> Iterator[None]:
    """Hold the lock of one key: builders of the same entry take turns (the lock dies with its process)."""
    fd = os.open(cache_dir / f".lock-{key}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale(cache_dir: Path, own_key: str) -> None:
    """Remove what killed builds left: .build-/.trash- directories whose key nobody holds the lock of."""
    for leftover in [*cache_dir.glob(".build-*"), *cache_dir.glob(".trash-*")]:
        key = leftover.name.split("-")[1]
        if key == own_key:  # ours: we hold its lock
            shutil.rmtree(leftover, ignore_errors=True)
            continue
        fd = os.open(cache_dir / f".lock-{key}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(leftover, ignore_errors=True)
        except BlockingIOError:  # being built right now
            pass
        finally:
            os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
