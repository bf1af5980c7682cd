"""Tag schemes of spans (BIO, IOB1, BIOES): spans by conlleval's rules, conversion, checks, constraints.

A span tag is `PREFIX-TYPE` (B-PER, I-LOC, E-ORG, S-MISC) or `O`. conlleval reads any of these
sequences, sloppy ones included: a chunk starts at a B or S, or at an I or E whose type differs from the
previous tag's or that follows O, E or S; it ends before the next chunk start or O. Tags without that
shape (part-of-speech tags: NOUN, -LRB-) are plain: no scheme, no spans.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from charlm.errors import CorpusError

SCHEMES = ("bio", "iob1", "bioes")
Span = tuple[str, int, int]  # (type, first token, last token + 1)


def split_tag(tag: str) -> tuple[str, str]:
    """('B', 'PER') for B-PER, ('O', '') for O; a tag of another shape is ('', tag)."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if sep and prefix in ("B", "I", "E", "S") and kind:
        return prefix, kind
    return "", tag


def is_span_tagset(tags: Sequence[str]) -> bool:
    """True when every tag is O or PREFIX-TYPE, and some tag is not O: a set of span tags."""
    shapes = [split_tag(t)[0] for t in tags]
    return bool(shapes) and all(s for s in shapes) and any(s != "O" for s in shapes)


def _starts(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    (pp, pt), (cp, ct) = prev, cur
    if cp in ("B", "S"):
        return True
    if cp in ("I", "E"):
        return pp in ("O", "E", "S", "") or pt != ct
    return False


def _ends(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    (pp, pt), (cp, ct) = prev, cur
    if pp in ("E", "S"):
        return True
    if pp in ("B", "I"):
        return cp in ("B", "S", "O", "") or pt != ct
    return False


def spans(tags: Sequence[str]) -> list[Span]:
    """The chunks of one sentence's tags, by conlleval's rules (any scheme, sloppy sequences included)."""
    out: list[Span] = []
    prev, start = ("O", ""), -1
    for i, tag in enumerate([*tags, "O"]):
        cur = split_tag(tag)
        if start >= 0 and (_ends(prev, cur) or _starts(prev, cur)):
            out.append((prev[1], start, i))
            start = -1
        if _starts(prev, cur):
            start = i
        prev = cur
    return out


def from_spans(found: Sequence[Span], length: int, scheme: str) -> list[str]:
    """Tags of a sentence of `length` tokens holding the spans (sorted, not overlapping) in `scheme`."""
    tags = ["O"] * length
    last_end, last_type = -1, ""
    for kind, a, b in found:
        for i in range(a, b):
            tags[i] = f"I-{kind}"
        if scheme == "bio":
            tags[a] = f"B-{kind}"
        elif scheme == "bioes":
            if b - a == 1:
                tags[a] = f"S-{kind}"
            else:
                tags[a], tags[b - 1] = f"B-{kind}", f"E-{kind}"
        elif a == last_end and kind == last_type:  # iob1: B only where a span follows one of its type
            tags[a] = f"B-{kind}"
        last_end, last_type = b, kind
    return tags


def convert(tags: Sequence[str], scheme: str) -> list[str]:
    """The same spans written in `scheme`."""
    return from_spans(spans(tags), len(tags), scheme)


def violation(tags: Sequence[str], scheme: str) -> int | None:
    """The index of the first tag `scheme` does not allow there (None: the sequence is valid)."""
    prev = ("O", "")
    for i, tag in enumerate(tags):
        p, kind = split_tag(tag)
        if p == "":
            return i
        pp, pt = prev
        inside = pp in ("B", "I") and pt == kind
        if scheme == "bio" and (p in ("E", "S") or (p == "I" and not inside)):
            return i
        if scheme == "iob1" and (p in ("E", "S") or (p == "B" and not (pp in ("B", "I") and pt == kind))):
            return i
        if scheme == "bioes":
            if p in ("I", "E") and not inside:
                return i
            if pp in ("B", "I") and not (p in ("I", "E") and pt == kind):
                return i
        prev = (p, kind)
    if scheme == "bioes" and prev[0] in ("B", "I"):
        return len(tags) - 1
    return None


def detect(sentences: Sequence[Sequence[str]]) -> str:
    """The scheme a set of span-tagged sentences follows: bioes if E- or S- occur, else bio if it is valid
    BIO, else iob1 if valid IOB1, else bio (read leniently, as conlleval does)."""
    prefixes = {split_tag(t)[0] for s in sentences for t in s}
    if prefixes & {"E", "S"}:
        return "bioes"
    if all(violation(s, "bio") is None for s in sentences):
        return "bio"
    if all(violation(s, "iob1") is None for s in sentences):
        return "iob1"
    return "bio"


def check(sentences: Sequence[Sequence[str]], lines: Sequence[Sequence[int]], scheme: str, path: str) -> None:
    """A CorpusError naming the file and line of the first tag `scheme` does not allow."""
    for tags, where in zip(sentences, lines):
        i = violation(tags, scheme)
        if i is not None:
            raise CorpusError(
                f"{path}:{where[i]}: tag {tags[i]!r} is not allowed there in the {scheme.upper()} scheme; "
                "fix the tag, or pass --tag-scheme with the scheme the file uses"
            )


def constraints(tags: Sequence[str], scheme: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(allowed (K, K), allowed_start (K,), allowed_end (K,)): the transitions `scheme` allows between the tags."""
    parts = [split_tag(t) for t in tags]

    def follows(a: tuple[str, str], b: tuple[str, str]) -> bool:
        (pa, ta), (pb, tb) = a, b
        inside = pa in ("B", "I")
        if scheme == "bio":
            return pb != "I" or (inside and ta == tb)
        if scheme == "iob1":
            return pb != "B" or (inside and ta == tb)
        return (pb in ("I", "E") and ta == tb) if inside else pb in ("B", "S", "O")  # bioes

    allowed = torch.tensor([[follows(a, b) for b in parts] for a in parts], dtype=torch.bool)
    first = {"bio": ("B", "O"), "iob1": ("I", "O"), "bioes": ("B", "S", "O")}[scheme]
    last = ("E", "S", "O") if scheme == "bioes" else ("B", "I", "O")
    start = torch.tensor([p in first for p, _ in parts], dtype=torch.bool)
    end = torch.tensor([p in last for p, _ in parts], dtype=torch.bool)
    return allowed, start, end
