"""Labelled (and unlabelled) texts from files: TSV, CSV with a header, JSON lines, fastText lines, plain lines.

    tsv       label TAB text                       (a label field may hold several: "sports,politics")
    csv       a header row; the text and label columns named by options (default "text", "label")
    jsonl     one object a line: {"text": ..., "label": "x"} or {"text": ..., "label": ["x", "y"]}
    fasttext  __label__x __label__y text ...       (fastText's own format)
    lines     one text a line, no labels            (only for texts to classify)

The format follows the extension (.tsv, .csv, .jsonl/.ndjson, .ft/.fasttext) unless given; a .txt file whose
first line starts with __label__ is fastText's. Every problem is a one-line `CorpusError` naming the file, the
line and what to do. Blank lines are skipped; a byte-order mark and CRLF line ends are read as usual.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from charlm.data import decode_text
from charlm.errors import CorpusError

FORMATS = ("tsv", "csv", "jsonl", "fasttext")
INPUT_FORMATS = (*FORMATS, "lines")
_BY_SUFFIX = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".ft": "fasttext",
              ".fasttext": "fasttext"}  # fmt: skip
FASTTEXT_PREFIX = "__label__"


@dataclass(frozen=True)
class Example:
    """One text and its labels (none for a text to classify), with the line it came from."""

    text: str
    labels: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Columns:
    """How a file's fields are found: CSV/JSON names, and the separator of several labels in one field."""

    text: str = "text"
    label: str = "label"
    label_separator: str = ","


def read_text(path: str | Path) -> str:
    """A file's text (BOM dropped, CRLF and CR read as LF); a missing, binary or non-UTF-8 file is one line."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{p} does not exist; pass a labelled file (TSV, CSV, JSON lines or fastText)") from None
    except IsADirectoryError:
        raise CorpusError(f"{p} is a directory; pass a labelled file (TSV, CSV, JSON lines or fastText)") from None
    except OSError as exc:
        raise CorpusError(f"cannot read {p}: {exc.strerror or exc}") from None
    return decode(data, str(p))


def decode(data: bytes, name: str) -> str:
    return decode_text(data, name, "pass UTF-8 text")


def guess_format(name: str, text: str, default: str | None = None) -> str:
    """The format a file's name (or, for .txt, its first line) says; `default`, else a one-line error."""
    found = _BY_SUFFIX.get(Path(name).suffix.lower())
    if found:
        return found
    first = next((line for line in text.split("\n") if line.strip()), "")
    if first.startswith(FASTTEXT_PREFIX):
        return "fasttext"
    if default is not None:
        return default
    raise CorpusError(
        f"{name}: cannot tell the format from its name; name it .tsv, .csv, .jsonl or .ft, or pass "
        f"--format ({', '.join(FORMATS)})"
    )


def read_examples(
    path: str | Path, fmt: str | None = None, columns: Columns = Columns(), labelled: bool = True
) -> list[Example]:
    """The examples of a file (see the module doc). labelled=False reads texts only (labels, if any, kept)."""
    text = read_text(path)
    return parse_examples(text, str(path), fmt or guess_format(str(path), text), columns, labelled)


def parse_examples(
    text: str, name: str, fmt: str, columns: Columns = Columns(), labelled: bool = True
) -> list[Example]:
    """The examples in `text` (read from `name`, for messages) in format `fmt`."""
    if fmt not in INPUT_FORMATS:
        raise CorpusError(f"unknown format {fmt!r}; choose {', '.join(INPUT_FORMATS)}")
    if fmt == "lines":
        if labelled:
            raise CorpusError(f"{name}: plain lines have no labels; training reads {', '.join(FORMATS)}")
        return [Example(line.strip(), (), n) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if fmt == "csv":
        examples = _csv(text, name, columns, labelled)
    else:
        parse = {"tsv": _tsv, "jsonl": _jsonl, "fasttext": _fasttext}[fmt]
        examples = [parse(line, name, n, columns, labelled) for n, line in enumerate(text.split("\n"), 1)
                    if line.strip()]  # fmt: skip
    if labelled and not examples:
        raise CorpusError(f"{name} holds no examples; pass a file with one labelled text a line")
    return examples


def _where(name: str, line: int) -> str:
    return f"{name}, line {line}"


def _split_labels(field: str, columns: Columns) -> tuple[str, ...]:
    parts = field.split(columns.label_separator) if columns.label_separator else [field]
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _checked(name: str, line: int, text: str, labels: tuple[str, ...], labelled: bool) -> Example:
    if labelled and not labels:
        raise CorpusError(f"{_where(name, line)}: no label; every training text needs one")
    if labelled and not text.strip():
        raise CorpusError(f"{_where(name, line)}: empty text; give the text after the label or drop the line")
    return Example(text.strip(), labels, line)


def _tsv(line: str, name: str, n: int, columns: Columns, labelled: bool) -> Example:
    if "\t" not in line:
        raise CorpusError(f"{_where(name, n)}: no TAB; a TSV line is `label TAB text`")
    label, text = line.split("\t", 1)
    return _checked(name, n, text, _split_labels(label, columns), labelled)


def _fasttext(line: str, name: str, n: int, columns: Columns, labelled: bool) -> Example:
    words = line.split()
    labels = []
    while words and words[0].startswith(FASTTEXT_PREFIX):
        label = words.pop(0)[len(FASTTEXT_PREFIX) :]
        if not label:
            raise CorpusError(f"{_where(name, n)}: an empty __label__; write __label__NAME")
        labels.append(label)
    if labelled and not labels:
        raise CorpusError(f"{_where(name, n)}: no __label__ at the start; a fastText line is `__label__X text`")
    return _checked(name, n, " ".join(words), tuple(dict.fromkeys(labels)), labelled)


def _jsonl(line: str, name: str, n: int, columns: Columns, labelled: bool) -> Example:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{_where(name, n)}: not JSON ({exc.msg}); write one JSON object a line") from None
    if not isinstance(obj, dict):
        raise CorpusError(f'{_where(name, n)}: not a JSON object; write {{"{columns.text}": ..., ...}}')
    text = obj.get(columns.text)
    if not isinstance(text, str):
        raise CorpusError(
            f"{_where(name, n)}: no string field {columns.text!r}; name the text field with --text-column"
        )
    raw = obj.get(columns.label)
    if raw is None:
        labels: tuple[str, ...] = ()
    elif isinstance(raw, list) and all(isinstance(x, (str, int)) for x in raw):
        labels = tuple(dict.fromkeys(str(x).strip() for x in raw if str(x).strip()))
    elif isinstance(raw, (str, int)) and not isinstance(raw, bool):
        labels = _split_labels(str(raw), columns)
    else:
        raise CorpusError(f"{_where(name, n)}: field {columns.label!r} is not a label or a list of labels")
    if labelled and columns.label not in obj:
        raise CorpusError(f"{_where(name, n)}: no field {columns.label!r}; name the label field with --label-column")
    return _checked(name, n, text, labels, labelled)


def _csv(text: str, name: str, columns: Columns, labelled: bool) -> list[Example]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise CorpusError(f"{name} is empty; a CSV file starts with a header naming its columns")
        names = [h.strip() for h in header]
        wanted = [columns.text] + ([columns.label] if labelled else [])
        for col, flag in zip(wanted, ("--text-column", "--label-column")):
            if col not in names:
                raise CorpusError(
                    f"{_where(name, 1)}: no column {col!r} in the header ({', '.join(names)}); name it with {flag}"
                )
        ti = names.index(columns.text)
        li = names.index(columns.label) if columns.label in names else None
        out = []
        for row in reader:
            n = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise CorpusError(
                    f"{_where(name, n)}: {len(row)} fields, the header has {len(names)}; quote fields holding commas"
                )
            labels = _split_labels(row[li], columns) if li is not None else ()
            out.append(_checked(name, n, row[ti], labels, labelled))
        return out
    except csv.Error as exc:
        raise CorpusError(f"{_where(name, reader.line_num)}: bad CSV ({exc}); check its quoting") from None
