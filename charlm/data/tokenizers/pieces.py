"""Text cut where no token spans the cut, and the token a text is read after."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def text_chunks(text: str, size: int, seps: tuple[str, ...]) -> Iterator[str]:
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


def token_safe_pieces(chunks: Iterable[str], kind: str) -> Iterator[str]:
    """Re-cut text chunks so that no token of `kind` spans two pieces.

    A char token is one character, so any cut is safe. Word tokens never span a
    line end or a space, subword tokens never span a line end ("\\n" is a piece of
    its own), so a piece ends just after the last such separator of what has been
    read and the rest waits for the next chunk. Joined, the pieces equal the chunks.
    """
    if kind == "char":
        yield from (c for c in chunks if c)
        return
    seps = ("\n", " ") if kind == "word" else ("\n",)
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = max(text.rfind(sep) for sep in seps) + 1
        if cut:
            yield text[:cut]
        carry = text[cut:]
    if carry:
        yield carry


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
