"""A file's tags as the model trains on them: the span scheme chosen (or none), checked, converted to BIOES."""

from __future__ import annotations

from collections.abc import Sequence

from charlm.errors import CorpusError
from charlm.tagging.data import Sentence
from charlm.tagging.schemes import check, convert, detect, is_span_tagset

INTERNAL = "bioes"  # span tags are trained in BIOES: its transitions say where a span starts and ends


def training_tags(sentences: Sequence[Sentence], declared: str | None) -> str | None:
    """The span scheme of the training tags (`declared`, else detected), or None for plain tags (POS)."""
    tags = {t for s in sentences for t in s.tags}
    if not is_span_tagset(sorted(tags)):
        if declared is not None:
            raise CorpusError(
                f"--tag-scheme {declared} needs span tags (B-X, I-X, O, ...); these are plain tags "
                f"such as {sorted(tags)[:3]}; drop --tag-scheme"
            )
        return None
    return declared or detect([s.tags for s in sentences])


def check_tags(sentences: Sequence[Sentence], scheme: str | None, path: str) -> None:
    """A CorpusError naming the file and line of the first tag the scheme does not allow."""
    if scheme is not None:
        check([s.tags for s in sentences], [s.lines for s in sentences], scheme, path)


def to_internal(tags: Sequence[str], scheme: str | None) -> list[str]:
    return list(tags) if scheme is None else convert(tags, INTERNAL)


def from_internal(tags: Sequence[str], scheme: str | None) -> list[str]:
    return list(tags) if scheme is None else convert(tags, scheme)
