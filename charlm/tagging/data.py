"""Labelled and raw sentences: CoNLL-U and column files, raw text split into words, and what a file looked like.

    read_labelled(path, column="upos")   CoNLL-U (.conllu, or 10 tab-separated columns with a numeric ID)
                                         or a column file: token and tag separated by tabs or spaces, the tag
                                         last, a blank line between sentences, -DOCSTART- lines skipped
    read_raw(text, pretokenized=False)   one sentence per line, split by the punct word tokenizer's rule
                                         (or at whitespace when pretokenized)

Every sentence remembers the line of each word, so errors name the file and line; a CoNLL-U sentence keeps
its own lines (comments, multi-word tokens, empty nodes) so a tagged file is written back whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from charlm.data import PUNCT_RE, decode_text
from charlm.errors import CorpusError

COLUMNS = {"upos": 3, "xpos": 4}  # CoNLL-U's tag columns by name (0-based)
FORMATS = ("conllu", "column", "raw")


@dataclass
class Sentence:
    """One sentence: its words, their tags (empty when unlabelled) and where each came from."""

    words: list[str]
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the 1-based line of each word in its file
    rows: list[str] = field(default_factory=list)  # CoNLL-U: the sentence's own lines, as read
    word_rows: list[int] = field(default_factory=list)  # CoNLL-U: the index in `rows` of each word


def _read(path: str | Path) -> str:
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read {name}: {exc.strerror or exc}") from None
    return decode(data, name)


def decode(data: bytes, name: str) -> str:
    """UTF-8 text with the BOM dropped and CRLF read as LF; a one-line CorpusError for binary or bad bytes."""
    return decode_text(data, name, "pass a UTF-8 text file")


def sniff(text: str) -> str:
    """conllu when the first data line has 10 tab-separated columns and a numeric ID, else column."""
    for line in text.split("\n"):
        if line.strip() and not line.startswith("#"):
            cols = line.split("\t")
            return "conllu" if len(cols) == 10 and cols[0].split("-")[0].split(".")[0].isdigit() else "column"
    return "column"


def read_labelled(path: str | Path, column: str = "upos", require_tags: bool = True) -> tuple[list[Sentence], str]:
    """The sentences of a labelled file and its format ("conllu" or "column").

    A file with no sentence, a CoNLL-U line with other than 10 columns, or (require_tags) a token with no
    tag is a CorpusError naming the file and line."""
    text = _read(path)
    fmt = "conllu" if str(path).endswith(".conllu") else sniff(text)
    sentences = (
        read_conllu(text, str(path), column, require_tags)
        if fmt == "conllu"
        else read_columns(text, str(path), require_tags)
    )
    if not sentences:
        raise CorpusError(f"{path} holds no sentence; pass a CoNLL-U or column file with tokens and tags")
    return sentences, fmt


def read_conllu(text: str, name: str, column: str = "upos", require_tags: bool = True) -> list[Sentence]:
    """CoNLL-U sentences with the tags of `column` (upos or xpos); multi-word ranges and empty nodes skipped."""
    col = COLUMNS[column]
    out: list[Sentence] = []
    cur = Sentence([])
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            if cur.words:
                out.append(cur)
            elif cur.rows:
                raise CorpusError(f"{name}:{n}: a sentence with comments but no token line; remove them or add tokens")
            cur = Sentence([])
            continue
        cur.rows.append(line)
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise CorpusError(
                f"{name}:{n}: a CoNLL-U token line has 10 tab-separated columns, this one {len(cols)}; "
                "is the file a column file (pass it without the .conllu name) or are tabs replaced by spaces?"
            )
        ident = cols[0]
        if "-" in ident or "." in ident:  # a multi-word token's range, or an empty node: not a word
            continue
        if not ident.isdigit():
            raise CorpusError(f"{name}:{n}: the ID column holds {ident!r}, not a number; the file is not CoNLL-U")
        tag = cols[col]
        if require_tags and tag in ("", "_"):
            raise CorpusError(f"{name}:{n}: the token {cols[1]!r} has no {column.upper()} tag ('_')")
        cur.words.append(cols[1])
        cur.tags.append(tag)
        cur.lines.append(n)
        cur.word_rows.append(len(cur.rows) - 1)
    if cur.words:
        out.append(cur)
    return out


def read_columns(text: str, name: str, require_tags: bool = True) -> list[Sentence]:
    """Column sentences: the first field is the token, the last the tag; a blank line ends a sentence."""
    out: list[Sentence] = []
    cur = Sentence([])
    for n, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields:
            if cur.words:
                out.append(cur)
            cur = Sentence([])
            continue
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2:
            if require_tags:
                raise CorpusError(
                    f"{name}:{n}: the token {fields[0]!r} has no tag; write the token and its tag separated by "
                    "a tab or a space (the tag last)"
                )
            fields.append("")
        cur.words.append(fields[0])
        cur.tags.append(fields[-1])
        cur.lines.append(n)
    if cur.words:
        out.append(cur)
    return out


def split_words(line: str, pretokenized: bool = False) -> list[str]:
    """The words of one line of raw text: by the punct word tokenizer's rule, or at whitespace."""
    return line.split() if pretokenized else PUNCT_RE.findall(line)


def read_raw(text: str, pretokenized: bool = False) -> list[Sentence]:
    """One sentence per non-empty line of raw text, unlabelled."""
    out = []
    for n, line in enumerate(text.split("\n"), start=1):
        words = split_words(line, pretokenized)
        if words:
            out.append(Sentence(words, lines=[n] * len(words)))
    return out


def tag_set(sentences: Sequence[Sentence]) -> list[str]:
    """The tags of the sentences, sorted (O first when present)."""
    tags = {t for s in sentences for t in s.tags}
    return sorted(tags, key=lambda t: (t != "O", t))
