"""ARPA files of n-gram models, and the ARPA-safe names of a tokenizer's ids.

An ARPA file holds a model in backoff form (`charlm.models.ngram`): per stored n-gram its
log10 P and, for a context, its log10 gamma as the back-off weight, with 10 significant
digits; gzip when the name ends in .gz (read: whenever the file starts with gzip's magic
number). KenLM refuses a file without <s> and </s>, so both are written as unigrams with
log10 probability -99 (1e-99: they hold no mass of charlm's vocabulary, which sums to 1
without them) and backoff 0; they are never part of a longer n-gram. Token names: see
`token_names`. (The `kenlm` pip package reads orders up to 6; build it with MAX_ORDER=7
or more for longer models.)
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import unicodedata
from collections.abc import Iterator, Sequence
from itertools import islice, repeat
from pathlib import Path
from typing import IO, Any

import numpy as np

from charlm.errors import CheckpointError, ConfigError, StorageError, one_line
from charlm.fileio import atomic_write
from charlm.models.ngram_estimate import Backoff, find

SENTENCE_MARKER_LOG10 = -99.0  # log10 p of <s> and </s> in an ARPA file
LN10 = math.log(10.0)
_ARPA_BLOCK = 1 << 18  # n-gram lines formatted or parsed at once
_RESERVED = ("<s>", "</s>", "<unk>", "<eos>")


class _ArpaError(Exception):
    """A problem with an ARPA file's content (becomes a CheckpointError naming the file)."""


def write_arpa(path: str | os.PathLike, token_names: Sequence[str], vocab: int, tables: Backoff) -> None:
    """Write backoff tables (keys, ln P, ln gamma per order) as an ARPA file, atomically (gzip for .gz)."""
    names = np.array(_check_names(token_names, vocab), dtype=np.dtypes.StringDType())
    path = Path(path)
    keys = tables[0]
    counts = [len(k) for k in keys]
    counts[0] += 2  # <s> and </s>
    bow = "" if len(keys) == 1 else "\t0"
    markers = "".join(f"{SENTENCE_MARKER_LOG10:g}\t{m}{bow}\n" for m in ("<s>", "</s>"))

    def body(f: IO[bytes]) -> None:
        f.write(("\\data\\\n" + "".join(f"ngram {k}={c}\n" for k, c in enumerate(counts, 1))).encode())
        for i in range(len(keys)):
            f.write(f"\n\\{i + 1}-grams:\n".encode())
            for block in _arpa_lines(tables, vocab, i, names):
                f.write(block.encode("utf-8"))
            if i == 0:
                f.write(markers.encode())
        f.write(b"\n\\end\\\n")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as raw:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
                    body(gz)  # type: ignore[arg-type]
            else:
                body(raw)

    try:
        atomic_write(path, write)
    except StorageError as exc:  # the model's file is a checkpoint's: say so, as reading it does
        raise CheckpointError(str(exc)) from None


def _ngram_tokens(keys: list[np.ndarray], vocab: int, i: int, rows: np.ndarray) -> np.ndarray:
    """Token ids of rows of the order i+1 table: (n,) -> (n, i+1)."""
    cols = []
    for j in range(i, 0, -1):
        key = keys[j][rows]
        cols.append(key % vocab)
        rows = key // vocab
    cols.append(rows)
    return np.stack(cols[::-1], axis=1)


def _arpa_lines(tables: Backoff, vocab: int, i: int, names: np.ndarray) -> Iterator[str]:
    """The lines of the \\{i+1}-grams: section, a block at a time."""
    keys, logp, logbow = tables
    n, last = len(keys[i]), i == len(keys) - 1
    for start in range(0, n, _ARPA_BLOCK):
        rows = np.arange(start, min(n, start + _ARPA_BLOCK))
        tokens = _ngram_tokens(keys, vocab, i, rows)  # (b, i+1)
        words = names[tokens[:, 0]]
        for j in range(1, i + 1):
            words = np.strings.add(np.strings.add(words, " "), names[tokens[:, j]])
        probs = (logp[i][rows] / LN10).tolist()
        if last:
            yield "".join([f"{p:.10g}\t{w}\n" for p, w in zip(probs, words.tolist())])
        else:
            bows = (logbow[i][rows] / LN10).tolist()
            yield "".join([f"{p:.10g}\t{w}\t{b:.10g}\n" for p, w, b in zip(probs, words.tolist(), bows)])


def read_arpa(path: str | os.PathLike, token_names: Sequence[str]) -> Backoff:
    """The backoff tables of an ARPA file (plain or gzip) written by `write_arpa` for this vocabulary."""
    names = list(token_names)
    if len(set(names)) != len(names):
        raise ConfigError("token names must be unique; use charlm.models.token_names(tokenizer)")
    try:
        with _open_arpa(Path(path)) as f:
            sections = _read_arpa(f, names)
        return _from_ngrams(len(names), sections, names)
    except _ArpaError as exc:
        raise CheckpointError(f"{path} is not a usable ARPA model: {exc}; re-export it or pick another") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise CheckpointError(f"cannot read {path}: {one_line(what)}; check the file") from None


def _from_ngrams(vocab: int, sections: list[tuple[np.ndarray, ...]], names: list[str]) -> Backoff:
    """Tables from parsed sections (tokens (n, k), log10 P, log10 gamma) per order."""
    tokens, lp, bo = sections[0]
    ids = tokens[:, 0]
    if len(np.unique(ids)) != len(ids) or len(ids) != vocab:
        missing = np.setdiff1d(np.arange(vocab), ids)
        what = f"no unigram for {names[missing[0]]!r}" if len(missing) else "a repeated unigram"
        raise _ArpaError(f"{what} (every token of the vocabulary needs exactly one)")
    keys, logp, logbow = [np.arange(vocab, dtype=np.int64)], [np.empty(vocab)], [np.empty(vocab)]
    logp[0][ids], logbow[0][ids] = lp * LN10, bo * LN10
    for k, (tokens, lp, bo) in enumerate(sections[1:], 2):
        prefix = tokens[:, 0]
        for j in range(1, k - 1):
            prefix = np.where(prefix >= 0, find(keys[j], prefix * vocab + tokens[:, j]), -1)
        if (prefix < 0).any():
            bad = " ".join(names[t] for t in tokens[np.flatnonzero(prefix < 0)[0]])
            raise _ArpaError(f"the {k}-gram '{bad}' has no stored {k - 1}-gram prefix")
        key = prefix * vocab + tokens[:, -1]
        order = np.argsort(key, kind="stable")
        key = key[order]
        if (key[1:] == key[:-1]).any():
            raise _ArpaError(f"a {k}-gram is listed twice")
        keys.append(key)
        logp.append(lp[order] * LN10)
        logbow.append(bo[order] * LN10)
    return keys, logp, logbow


@contextlib.contextmanager
def _open_arpa(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed when it starts with gzip's magic number (whatever its name)."""
    with open(path, "rb") as raw:
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        else:
            raw.seek(0)
            yield raw


def _content_line(f: IO[bytes], comments: bool = False) -> bytes | None:
    """The next line that is not blank (nor a '#' comment, if allowed), stripped; None at the end."""
    for line in f:
        line = line.strip()
        if line and not (comments and line.startswith(b"#")):
            return line
    return None


def _read_counts(f: IO[bytes]) -> list[int]:
    """The \\data\\ header: the number of n-grams of each order 1..N."""
    if _content_line(f, comments=True) != b"\\data\\":
        raise _ArpaError("it does not start with \\data\\")
    counts: list[int] = []
    for line in f:
        line = line.strip()
        if not line:
            break
        head, _, n = line.partition(b"=")
        if head != b"ngram %d" % (len(counts) + 1) or not n.isdigit():
            raise _ArpaError(f"bad count line {_show(line)} in the \\data\\ header")
        counts.append(int(n))
    if not counts:
        raise _ArpaError("the \\data\\ header lists no n-gram counts")
    return counts


_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[list(b" \t\n\r\x0b\x0c")] = True  # the bytes that bytes.split() splits on


def _parse_lines(lines: list[bytes], k: int, lookup: dict[bytes, int]) -> tuple[np.ndarray, ...]:
    """ARPA n-gram lines of order k -> tokens (n, k) (-1: unknown, -2: <s> or </s>), log10 P, log10 gamma."""
    blob = b"".join(lines)
    byte = np.frombuffer(blob, dtype=np.uint8)
    space = _IS_SPACE[byte]
    starts = ~space & np.concatenate([[True], space[:-1]])  # the first byte of every field
    newline = byte == 10
    fields = np.bincount((np.cumsum(newline) - newline)[starts], minlength=len(lines))  # per line
    bad = np.flatnonzero((fields != k + 1) & (fields != k + 2))
    if len(bad):
        raise _ArpaError(f"a {k}-gram line has {fields[bad[0]]} fields, not {k + 1} or {k + 2}: {_show(lines[bad[0]])}")
    flat = np.array(blob.split(), dtype=object)
    first = np.cumsum(fields) - fields  # (n,) the probability field of each line
    words = [flat[first + j] for j in range(1, k + 1)]
    tokens = np.stack([_token_ids(w, lookup) for w in words], axis=1)  # (n, k)
    unknown = np.argwhere(tokens == -1 if k == 1 else tokens < 0)  # <s> and </s> stand alone only
    if len(unknown):
        r, j = unknown[0]
        raise _ArpaError(f"the {k}-gram {_show(lines[r])} uses {_show(words[j][r])}, not a token of this vocabulary")
    backoff = np.zeros(len(lines))
    has = fields == k + 2
    backoff[has] = _floats(flat[first[has] + k + 1])
    return tokens, _floats(flat[first]), backoff


def _token_ids(names: np.ndarray, lookup: dict[bytes, int]) -> np.ndarray:
    return np.fromiter(map(lookup.get, names, repeat(-1)), dtype=np.int64, count=len(names))


def _floats(fields: np.ndarray) -> np.ndarray:
    try:
        x = fields.astype(np.float64)
    except (ValueError, TypeError):
        x = np.array([np.nan])
    if not np.isfinite(x).all():
        bad = next(f for f in fields if not _is_finite_number(f))
        raise _ArpaError(f"{_show(bad)} is not a finite log10 probability or backoff")
    return x


def _is_finite_number(field: bytes) -> bool:
    try:
        return math.isfinite(float(field))
    except ValueError:
        return False


def _read_section(f: IO[bytes], k: int, count: int, lookup: dict[bytes, int]) -> tuple[np.ndarray, ...]:
    """The \\k-grams: section of `count` lines -> tokens (n, k), log10 P, log10 gamma."""
    if _content_line(f) != b"\\%d-grams:" % k:
        raise _ArpaError(f"the \\{k}-grams: section is missing (the file may be truncated)")
    parts = []
    for start in range(0, count, _ARPA_BLOCK):
        lines = list(islice(f, min(_ARPA_BLOCK, count - start)))
        if len(lines) < min(_ARPA_BLOCK, count - start) or not lines[-1].endswith(b"\n"):
            raise _ArpaError(f"the \\{k}-grams: section ends before its {count} lines (truncated?)")
        parts.append(_parse_lines(lines, k, lookup))
    tokens, logp, backoff = (np.concatenate(p) for p in zip(*parts)) if parts else _empty_section(k)
    keep = tokens[:, 0] != -2  # <s> and </s> are written for KenLM only
    return tokens[keep], logp[keep], backoff[keep]


def _empty_section(k: int) -> tuple[np.ndarray, ...]:
    return np.zeros((0, k), np.int64), np.zeros(0), np.zeros(0)


def _read_arpa(f: IO[bytes], names: list[str]) -> list[tuple[np.ndarray, ...]]:
    """All sections of an ARPA file: per order (tokens (n, k), log10 P, log10 gamma)."""
    lookup = {n.encode("utf-8"): i for i, n in enumerate(names)}
    lookup[b"<s>"] = lookup[b"</s>"] = -2
    counts = _read_counts(f)
    sections = [_read_section(f, k, n, lookup) for k, n in enumerate(counts, 1)]
    if _content_line(f) != b"\\end\\":
        raise _ArpaError("\\end\\ is missing after the last section (truncated?)")
    return sections


def _show(line: bytes) -> str:
    text = line.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _unsafe(c: str) -> bool:
    """A character that cannot be part of an ARPA word: whitespace, controls, format and other
    invisible characters, separators, surrogates, unassigned code points."""
    return c.isspace() or unicodedata.category(c)[0] in "CZ"


def _escape(surface: str) -> str:
    # '<' is escaped too where it could make the name look like a generated one, so names stay unique
    lt = "<U+" in surface or "<id:" in surface or surface in _RESERVED
    return "".join(f"<U+{ord(c):04X}>" if _unsafe(c) or (lt and c == "<") else c for c in surface)


def token_names(tokenizer: Any) -> list[str]:
    """ARPA-safe, unique names for every id of a charlm tokenizer (the words of its ARPA files).

    - the unknown id (0) is `<unk>`; the word tokenizer's line end (id 1) is `<eos>`;
    - any other id is its surface `tokenizer.decode([i])` with every whitespace, control,
      format, separator, surrogate or unassigned character written `<U+XXXX>` (hex code
      point, e.g. "\\n" -> `<U+000A>`, " the" -> `<U+0020>the`); a '<' is written
      `<U+003C>` too when the surface contains "<U+" or "<id:" or is one of <s>, </s>,
      <unk>, <eos>, so no surface can pose as an escape or a special token;
    - an id whose surface is empty or equal to an earlier id's (a byte-fallback piece
      and the character it spells, byte pieces of partial characters that all decode
      to U+FFFD) is `<id:N>`, N its id.
    The names are therefore distinct: {name: id} inverts the list.
    """
    eos = getattr(tokenizer, "eos_id", None)
    names: list[str] = []
    seen: set[str] = set()
    for i in range(tokenizer.vocab_size):
        if i == tokenizer.unk_id:
            name = "<unk>"
        elif i == eos:
            name = "<eos>"
        else:
            name = _escape(tokenizer.decode([i]))
            if not name or name in seen:
                name = f"<id:{i}>"
        seen.add(name)
        names.append(name)
    return names


def _check_names(token_names: Sequence[str], vocab: int) -> list[str]:
    names = list(token_names)
    hint = "use charlm.models.token_names(tokenizer)"
    if len(names) != vocab:
        raise ConfigError(f"{len(names)} token names for a vocabulary of {vocab} ids; {hint}")
    for name in names:
        if not isinstance(name, str) or not name or any(map(_unsafe, name)) or name in ("<s>", "</s>"):
            raise ConfigError(f"token name {name!r} cannot be an ARPA word (empty, blank, control, <s>); {hint}")
    if len(set(names)) != len(names):
        raise ConfigError(f"token names are not unique; {hint}")
    return names
