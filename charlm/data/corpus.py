"""Reading training and evaluation text: files or directories of UTF-8, cleaned the same way.

Every reader applies the same cleaning, so a text reads the same whole or streamed:
  - a leading byte-order mark (U+FEFF) is removed from each file;
  - CRLF and lone CR line ends become LF;
  - invalid UTF-8 is a `CorpusError` naming the file and the byte offset of the
    first bad byte (counted from the start of the file, BOM included), unless
    errors="replace", which turns undecodable bytes into U+FFFD.
A file is rejected as binary when its first 8 KiB hold a NUL byte, and as empty
when no character is left after removing the BOM (a file of only whitespace is
text, and is accepted).

A directory stands for the non-hidden regular files below it, minus what is not
corpus: a directory holding a charlm checkpoint (`checkpoint.json` with
"format": "charlm-checkpoint"), a cache directory (tagged by a `CACHEDIR.TAG`,
as charlm's token cache is) and any path the caller excludes (a run's own
output directory, which has no checkpoint yet on the first run). So
`charlm train .` never reads its own checkpoints or token files as text.

Large corpora are streamed: `corpus_files` lists the files with their sizes,
`iter_corpus_chunks` yields the cleaned text of any byte range of the files laid
end to end (joined as `read_corpus` joins them), and `split_offset` says where
the held-out part of a corpus starts, from the sizes and a few reads.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlm.errors import CorpusError

BOM = b"\xef\xbb\xbf"
BINARY_SNIFF_BYTES = 8192  # a NUL byte this early means "not a text file"
ERRORS = ("strict", "replace")
# what marks a directory that is not corpus; the checkpoint names are those of charlm.checkpoint.store,
# not imported because reading text must not pull in torch
CHECKPOINT_FILE, CHECKPOINT_FORMAT = "checkpoint.json", "charlm-checkpoint"
CACHEDIR_TAG = "CACHEDIR.TAG"  # https://bford.info/cachedir/: backup tools skip such directories too
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
_READ_BACK = 1 << 16  # bytes read at a time when looking back for a line start

PathLike = str | os.PathLike


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus and its size on disk in bytes (BOM and CRLF included)."""

    path: Path
    size: int


def read_corpus(paths: PathLike | Sequence[PathLike], errors: str = "strict", exclude: Sequence[PathLike] = ()) -> str:
    """Read one or more files and directories into one cleaned text.

    A directory stands for every non-hidden regular file below it, recursively
    (hidden: any name starting with "."; hidden directories are not entered),
    sorted by path component by component, skipping checkpoint and cache
    directories and the `exclude` paths (see the module docstring). Files are
    joined in the order given; when a file does not end with "\\n", a "\\n" is
    added before the next one so that two files never share a line.
    """
    parts: list[str] = []
    for f in list_corpus(paths, exclude):
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(read_text_file(f, errors))
    return "".join(parts)


def list_corpus(paths: PathLike | Sequence[PathLike], exclude: Sequence[PathLike] = ()) -> list[Path]:
    """The files that `read_corpus(paths, exclude=exclude)` reads, in its order.

    `exclude` applies to directory expansion: a file named in `paths` is always read.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    excluded = {os.path.realpath(p) for p in exclude}
    files = [f for p in paths for f in _expand(Path(p), excluded)]
    if not files:
        raise CorpusError("no corpus path given; pass at least one text file or directory")
    return files


def corpus_files(paths: PathLike | Sequence[PathLike], exclude: Sequence[PathLike] = ()) -> list[CorpusFile]:
    """`list_corpus` with each file's size, every file checked up front (readable, not binary, not empty).

    Decoding errors still surface only when a file is read (`iter_corpus_chunks`).
    """
    found = []
    for path in list_corpus(paths, exclude):
        try:
            with path.open("rb") as f:
                head = f.read(BINARY_SNIFF_BYTES)
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise CorpusError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
        _check_not_binary(path, head, 0)
        if size == 0 or head == BOM:
            raise _empty_error(path)
        found.append(CorpusFile(path, size))
    return found


def iter_corpus_chunks(
    files: Sequence[CorpusFile],
    errors: str = "strict",
    chunk_bytes: int = 1 << 20,
    start: int = 0,
    stop: int | None = None,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """Stream the cleaned text of bytes [start, stop) of `files` laid end to end.

    With the whole range, the pieces join to `read_corpus` of the same files; the
    "\\n" that `read_corpus` adds between two files belongs to the end of the first
    one. A range must start and stop where `split_offset` cuts (a character
    boundary, never inside a CRLF); then the text of [0, cut) followed by that of
    [cut, end) is the whole text. `on_read(n)` is told of every n bytes read.
    """
    _check_errors(errors)
    stop = sum(f.size for f in files) if stop is None else stop
    offset = 0
    for i, f in enumerate(files):
        lo, hi = max(start - offset, 0), min(stop - offset, f.size)
        offset += f.size
        if lo >= hi:
            continue
        last = ""
        for text in _iter_file_range(f.path, lo, hi, chunk_bytes, errors, on_read):
            last = text
            yield text
        if hi == f.size and i + 1 < len(files) and not last.endswith("\n"):
            yield "\n"


def split_offset(files: Sequence[CorpusFile], valid_fraction: float) -> int:
    """Where the held-out end of a corpus starts, in bytes of `files` laid end to end.

    With B the files' total size
    on disk and t = floor(B * (1 - valid_fraction)), the cut is the last line start
    in (t - B // 100, t]: just after a "\\n" byte, or the start of a file (files
    never share a line). With none there it stays at t, moved back to the start of
    a character (and before a CR whose LF follows), so both parts decode alone.
    It depends only on the bytes, never on how they are later chunked. 0 means
    the training part would be empty.
    """
    total = sum(f.size for f in files)
    target = int(total * (1.0 - valid_fraction))
    low = target - total // 100  # exclusive
    starts = [s for s in _file_starts(files) if low < s <= target]
    cut = max(starts, default=0)
    hi = target
    while hi > max(low, cut):  # the last "\n" byte at index >= low, read backwards in blocks
        lo = max(low, cut, hi - _READ_BACK)
        nl = _read_span(files, lo, hi).rfind(b"\n")
        if nl >= 0:
            return lo + nl + 1
        hi = lo
    return cut if cut else _char_start(files, target)


def _char_start(files: Sequence[CorpusFile], pos: int) -> int:
    """`pos` moved back to the start of a UTF-8 character, and before a CR that an LF follows."""
    base = max(0, pos - 4)
    near = _read_span(files, base, pos + 1)  # near[k] is the byte at base + k
    while pos > base and 0x80 <= near[pos - base] < 0xC0:  # a continuation byte
        pos -= 1
    if pos > base and near[pos - base - 1 : pos - base + 1] == b"\r\n":
        pos -= 1
    return pos


def _file_starts(files: Sequence[CorpusFile]) -> list[int]:
    """The offset of each file after the first in the files laid end to end."""
    starts, offset = [], 0
    for f in files[:-1]:
        offset += f.size
        starts.append(offset)
    return starts


def _read_span(files: Sequence[CorpusFile], lo: int, hi: int) -> bytes:
    """Bytes [lo, hi) of the files laid end to end (fewer past their end)."""
    parts, offset = [], 0
    for f in files:
        a, b = max(lo - offset, 0), min(hi - offset, f.size)
        if a < b:
            try:
                with f.path.open("rb") as fh:
                    fh.seek(a)
                    parts.append(fh.read(b - a))
            except OSError as exc:
                raise CorpusError(f"cannot read {f.path}: {exc.strerror}; check its permissions") from None
        offset += f.size
    return b"".join(parts)


def read_text_file(path: PathLike, errors: str = "strict") -> str:
    """Read one UTF-8 text file: BOM removed, CRLF and CR made LF (see the module docstring)."""
    _check_errors(errors)
    path = _existing_file(Path(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    _check_not_binary(path, data[:BINARY_SNIFF_BYTES], 0)
    skip = len(BOM) if data.startswith(BOM) else 0
    try:
        text = str(memoryview(data)[skip:], "utf-8", errors)  # a view: no copy of a large file
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc.object[exc.start], skip + exc.start) from None
    if not text:
        raise _empty_error(path)
    return normalise_newlines(text)


def iter_text_chunks(path: PathLike, chunk_bytes: int = 1 << 20, errors: str = "strict") -> Iterator[str]:
    """Stream one file as cleaned text pieces, reading `chunk_bytes` bytes at a time.

    Joined, the pieces equal `read_text_file(path, errors)`; memory stays a small
    multiple of `chunk_bytes` whatever the file size. A multi-byte character or a
    CRLF cut by a chunk boundary comes out whole (an incremental decoder carries
    the partial bytes, and a trailing CR waits for the next piece).
    """
    _check_errors(errors)
    path = _existing_file(Path(path))
    produced = False
    for text in _iter_file_range(path, 0, None, chunk_bytes, errors):
        produced = True
        yield text
    if not produced:
        raise _empty_error(path)


def _iter_file_range(
    path: Path,
    start: int,
    stop: int | None,
    chunk_bytes: int,
    errors: str,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The cleaned text of bytes [start, stop) of one file (to its end when stop is None), piece by piece.

    From the start of the file, the first 8 KiB are sniffed and a BOM is skipped;
    the last piece flushes the decoder, so the range must end on a character boundary.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    held_cr = b""  # a CR ending a block may be the first half of a CRLF cut by the boundary
    try:
        with path.open("rb") as f:
            if start == 0:  # sniff before decoding anything, so errors come in the same order as read_text_file's
                head = f.read(BINARY_SNIFF_BYTES)
                _check_not_binary(path, head, 0)
                start = len(BOM) if head.startswith(BOM) else 0
            f.seek(start)
            offset = start  # file offset of the next byte to read
            while True:
                block = f.read(chunk_bytes if stop is None else min(chunk_bytes, max(stop - offset, 0)))
                final = not block  # the final call flushes a truncated sequence at the end
                data_at, offset = offset - len(held_cr), offset + len(block)
                data, held_cr = held_cr + block, b""
                if data.endswith(b"\r") and not final:
                    data, held_cr = data[:-1], b"\r"
                carried = decoder.getstate()[0]  # the start of a character cut by the last boundary
                try:
                    text = decoder.decode(_lf_only(data), final)
                except UnicodeDecodeError as exc:
                    raise _first_bad_byte(path, carried + data, data_at - len(carried), exc) from None
                if on_read is not None and block:
                    on_read(len(block))
                if text:
                    yield text
                if final:
                    return
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror}; check its permissions") from None


def _lf_only(data: bytes) -> bytes:
    """CRLF and lone CR as LF, on bytes (a CR is never part of a multi-byte character): twice str.replace's speed."""
    if b"\r" not in data:
        return data
    b = np.frombuffer(data, np.uint8)
    keep = np.ones(len(b), bool)
    keep[:-1] = (b[:-1] != 13) | (b[1:] != 10)  # the CR of a CRLF goes ...
    b = b[keep]
    b[b == 13] = 10  # ... and a lone CR becomes LF
    return b.tobytes()


def _first_bad_byte(path: Path, data: bytes, at: int, exc: UnicodeDecodeError) -> CorpusError:
    """The error for the first invalid byte of `data` (the original bytes from file offset `at`): the decoder
    saw them with line ends made LF, so the offset is found again in the original."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as first:
        exc = first
    return _decode_error(path, exc.object[exc.start], at + exc.start)


def _expand(path: Path, excluded: set[str]) -> list[Path]:
    """A file -> [file]; a directory -> its corpus files (see the module docstring), sorted; else an error."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise CorpusError(f"corpus path not found: {path}; check the spelling or pass an existing file or directory")
    if not path.is_dir():
        raise CorpusError(f"{path} is neither a regular file nor a directory; pass a text file or a directory")
    if _not_corpus(path, excluded):
        raise CorpusError(
            f"{path} is a checkpoint, token cache or output directory, not text; pass the directory of your text"
        )
    found: list[Path] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not _not_corpus(Path(root) / d, excluded)]
        files = (Path(root) / n for n in names if not n.startswith("."))
        found.extend(f for f in files if f.is_file() and (not excluded or os.path.realpath(f) not in excluded))
    if not found:
        raise CorpusError(
            f"directory {path} holds no files (hidden files are skipped); put text files in it or pass a file"
        )
    return sorted(found, key=lambda f: f.relative_to(path).parts)


def _not_corpus(directory: Path, excluded: set[str]) -> bool:
    """True for a directory to skip: excluded, a charlm checkpoint or a tagged cache."""
    if excluded and os.path.realpath(directory) in excluded:
        return True
    try:
        with (directory / CACHEDIR_TAG).open("rb") as f:
            if f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE:
                return True
    except OSError:
        pass
    try:
        meta = json.loads((directory / CHECKPOINT_FILE).read_bytes())
    except (OSError, ValueError):  # no such file, or not JSON: not a checkpoint
        return False
    return isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT


def _existing_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        raise CorpusError(f"{path} is a directory; pass a single text file here")
    raise CorpusError(f"corpus file not found: {path}; check the spelling or pass an existing file")


def _check_errors(errors: str) -> None:
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {ERRORS}, got {errors!r}")


def _check_not_binary(path: Path, head: bytes, offset: int) -> None:
    nul = head.find(b"\x00")
    if nul >= 0:
        raise CorpusError(
            f"{path} looks binary (NUL byte at offset {offset + nul}); pass UTF-8 text "
            "(convert UTF-16 files to UTF-8 first)"
        )


def _decode_error(path: Path, byte: int, offset: int) -> CorpusError:
    return CorpusError(
        f"{path} is not valid UTF-8 (byte 0x{byte:02x} at offset {offset}); "
        "fix the file or pass --encoding-errors replace"
    )


def _empty_error(path: Path) -> CorpusError:
    return CorpusError(f"{path} is empty; pass a file that holds some text")


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR -> LF: how every text charlm reads (corpus, prompts) sees line ends."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
