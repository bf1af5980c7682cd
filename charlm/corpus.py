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
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import chain
from pathlib import Path

from charlm.errors import CorpusError

BOM = b"\xef\xbb\xbf"
BINARY_SNIFF_BYTES = 8192  # a NUL byte this early means "not a text file"
ERRORS = ("strict", "replace")

PathLike = str | os.PathLike


def read_corpus(paths: PathLike | Sequence[PathLike], errors: str = "strict") -> str:
    """Read one or more files and directories into one cleaned text.

    A directory stands for every non-hidden regular file below it, recursively
    (hidden: any name starting with "."; hidden directories are not entered),
    sorted by path component by component. Files are joined in the order given;
    when a file does not end with "\\n", a "\\n" is added before the next one so
    that two files never share a line.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [f for p in paths for f in _expand(Path(p))]
    if not files:
        raise CorpusError("no corpus path given; pass at least one text file or directory")
    parts: list[str] = []
    for f in files:
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(read_text_file(f, errors))
    return "".join(parts)


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
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    path = _existing_file(Path(path))
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    held_cr = ""  # a CR ending a piece may be the first half of a CRLF cut by the boundary
    produced = False
    try:
        with path.open("rb") as f:
            # sniff before decoding anything, so errors come in the same order as read_text_file's
            head = f.read(BINARY_SNIFF_BYTES)
            _check_not_binary(path, head, 0)
            offset = len(BOM) if head.startswith(BOM) else 0  # file offset of the next byte to decode
            blocks = chain(
                (head[i : i + chunk_bytes] for i in range(offset, len(head), chunk_bytes)),
                iter(partial(f.read, chunk_bytes), b""),
                [b""],  # the final call flushes a truncated sequence at the end of the file
            )
            for block in blocks:
                final = not block
                carried = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(block, final)
                except UnicodeDecodeError as exc:
                    # exc.object is the carried bytes followed by this block
                    raise _decode_error(path, exc.object[exc.start], offset - carried + exc.start) from None
                offset += len(block)
                text, held_cr = held_cr + text, ""
                if text.endswith("\r") and not final:
                    text, held_cr = text[:-1], "\r"
                if text:
                    produced = True
                    yield normalise_newlines(text)
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    if not produced:
        raise _empty_error(path)


def _expand(path: Path) -> list[Path]:
    """A file -> [file]; a directory -> its non-hidden regular files, sorted; else an error."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise CorpusError(f"corpus path not found: {path}; check the spelling or pass an existing file or directory")
    if not path.is_dir():
        raise CorpusError(f"{path} is neither a regular file nor a directory; pass a text file or a directory")
    found: list[Path] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(root) / n for n in names if not n.startswith(".") and (Path(root) / n).is_file())
    if not found:
        raise CorpusError(f"directory {path} holds no files (hidden files are skipped); put text files in it or pass a file")
    return sorted(found, key=lambda f: f.relative_to(path).parts)


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
