"""A small text read whole (a labelled file, a prompts file, standard input): bytes to text, or one line
saying why not."""

from __future__ import annotations

from charlm.data.corpus import normalise_newlines
from charlm.errors import CorpusError


def decode_text(data: bytes, name: str, hint: str) -> str:
    """Bytes read whole (a small file, standard input) as UTF-8 text: BOM dropped, CRLF and CR read as LF.
    A NUL byte (binary) or bytes that are not UTF-8 are a one-line CorpusError ending with `hint`."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{name} looks binary (NUL byte at offset {nul}); {hint}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{name} is not valid UTF-8 (byte offset {exc.start}); {hint}") from None
    return normalise_newlines(text.removeprefix("\ufeff"))
