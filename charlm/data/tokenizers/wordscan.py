"""Word scanning, the vectorised word path: a chunk's UTF-8 bytes -> token spans found with numpy.

The spans then become ids through an exact hash table (`wordtable.WordTable`), with no
Python step per token. It finds exactly the words of `str.split()` (whitespace) or of
`punct.PUNCT_RE` (punct), which a property test checks against `WordTokenizer.encode`.
"""

from __future__ import annotations

import re
from functools import cache
from typing import NamedTuple

import numpy as np

# the characters str.split() and the regex \s split on (str.isspace()); a test checks this list
SPACES = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_WIDE_SPACES = np.array([ord(c) for c in SPACES if ord(c) >= 0x80], dtype=np.uint32)
PAD = bytes(8)  # zeros after a chunk's bytes, so that an 8-byte read at any of its bytes stays in the buffer
_SPECIAL_TAILS = np.frombuffer(b"unk>eos>", "<u4")  # the 4 bytes after "<" in <unk> and <eos>, as integers


class Spans(NamedTuple):
    """A chunk's words as byte spans [starts, ends) of its UTF-8 `buf`, and the offsets of its "\\n" bytes."""

    buf: bytes
    starts: np.ndarray
    ends: np.ndarray
    newlines: np.ndarray


def scan_words(text: str, punct: bool) -> Spans:
    """The words of `text` as `str.split()` (or, with punct, `punct.PUNCT_RE` line by line) finds them."""
    buf = text.encode("utf-8", "surrogatepass") + PAD
    b = np.frombuffer(buf, np.uint8)[: -len(PAD)]
    space = (np.subtract(b, 9, dtype=np.uint8) <= 4) | (np.subtract(b, 28, dtype=np.uint8) <= 4)  # \t..\r, \x1c..space
    word = None
    if punct:  # \w: ASCII letters, digits and "_"
        word = (np.subtract(b, 48, dtype=np.uint8) <= 9) | (np.subtract(b | 32, 97, dtype=np.uint8) <= 25) | (b == 95)
    if not text.isascii():  # classify each multi-byte character, and mark all its bytes alike
        lead, size, code = _wide_chars(buf, len(b))
        _mark(space, lead, size, np.isin(code, _WIDE_SPACES))
        if word is not None:
            _mark(word, lead, size, _word_chars()[code])
    if word is not None:
        starts, ends = _punct_spans(buf, b, space, word, text.isascii())
    else:  # a word is a run of non-space bytes: its edges are where "space" flips
        edges = np.ones(len(b) + 2, bool)
        edges[1:-1] = space
        edges = np.flatnonzero(edges[1:] != edges[:-1])
        starts, ends = edges[0::2], edges[1::2]
    return Spans(buf, starts, ends, np.flatnonzero(b == 10))


def _wide_chars(buf: bytes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offset, length in bytes and code point of every multi-byte character in the first n bytes of buf."""
    b = np.frombuffer(buf, np.uint8)
    lead = np.flatnonzero(b[:n] >= 0xC0)
    b0 = b[lead].astype(np.uint32)
    c1, c2, c3 = ((b[lead + k] & 0x3F).astype(np.uint32) for k in (1, 2, 3))  # the pad keeps these in bounds
    size = 2 + (b0 >= 0xE0).astype(np.int64) + (b0 >= 0xF0)
    code = np.select(
        [size == 2, size == 3],
        [(b0 & 0x1F) << 6 | c1, (b0 & 0x0F) << 12 | c1 << 6 | c2],
        (b0 & 0x07) << 18 | c1 << 12 | c2 << 6 | c3,
    )
    return lead, size, code


def _mark(mask: np.ndarray, lead: np.ndarray, size: np.ndarray, which: np.ndarray) -> None:
    """Set `mask` on every byte of the multi-byte characters selected by `which`."""
    lead, size = lead[which], size[which]
    for k in range(4):
        mask[lead[size > k] + k] = True


@cache
def _word_chars() -> np.ndarray:
    """Which code points the regex \\w matches, as a table (built on first use, in about 0.3 s)."""
    marked = re.sub(r"\w", "\x00", "".join(map(chr, range(0x110000))))  # "\x00" is not \w
    table = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), "<u4") == 0
    table[0] = False
    return table


def _punct_spans(
    buf: bytes, b: np.ndarray, space: np.ndarray, word: np.ndarray, ascii: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The spans of `punct.PUNCT_RE`'s matches: <unk>/<eos>, \\w+('\\w+)?, or one other non-space character."""
    n = len(b)
    lt = np.flatnonzero(b == 60)  # "<"
    special = lt[np.isin(np.ndarray((len(buf) - 3,), "<u4", buffer=buf, strides=(1,))[lt + 1], _SPECIAL_TAILS)]
    inner = np.zeros(n + 5, bool)  # the 4 bytes after the "<" of a special token
    for k in range(1, 5):
        inner[special + k] = True
    inner = inner[:n]
    word &= ~inner
    run_start = word.copy()
    run_start[1:] &= ~word[:-1]
    start = run_start | ~(word | space | inner)  # a word run, or any other character, starts a token ...
    if not ascii:
        start &= (b & 0xC0) != 0x80  # ... at its first byte
    joined = _joined_apostrophes(b, word, run_start)
    start[joined] = False  # "don't" is one token: neither the apostrophe nor "t" starts one
    start[joined + 1] = False
    token = ~space
    end = token.copy()  # a token ends where the next byte is a space or starts another token
    end[:-1] &= space[1:] | start[1:]
    return np.flatnonzero(start), np.flatnonzero(end) + 1


def _joined_apostrophes(b: np.ndarray, word: np.ndarray, run_start: np.ndarray) -> np.ndarray:
    """The apostrophes inside a \\w+'\\w+ token.

    An apostrophe between two word runs links them, but a token takes one link:
    the regex reads a'b'c'd as a'b, ', c'd. So along a chain of linked runs every
    other link, from the first, joins.
    """
    ap = np.flatnonzero(b[1:-1] == 39) + 1  # "'", not at either end
    ap = ap[word[ap - 1] & word[ap + 1]]
    if not ap.size:
        return ap
    left = np.searchsorted(np.flatnonzero(run_start), ap - 1, side="right")  # the run before each, numbered from 1
    i = np.arange(ap.size)
    chain_start = np.ones(ap.size, bool)
    chain_start[1:] = left[1:] != left[:-1] + 1
    first = np.maximum.accumulate(np.where(chain_start, i, 0))
    return ap[(i - first) % 2 == 0]
