"""A tagger's vocabularies (words, characters, tags), its tag scheme, and its LMs' tokenizers: tokenizer.json.

Ids 0 and 1 of words and characters are padding and <unk>. The tags are those the model predicts: a
span-tagged file is trained in BIOES (the scheme whose transitions say the most) and its tags are
written back in the file's own scheme (`scheme`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlm.errors import CheckpointError
from charlm.fileio import atomic_write_json

PAD, UNK = 0, 1
FORMAT = "charlm-tagger-vocab"


@dataclass
class TagVocab:
    """What turns words into ids and ids into tags (the tagger's "tokenizer")."""

    words: list[str]  # index = id; 0 and 1 are padding and <unk>
    chars: list[str]
    tags: list[str]  # the model's own tags (BIOES for spans)
    scheme: str | None = None  # the training file's span scheme (bio, iob1, bioes), None for plain tags
    column: str = "upos"  # CoNLL-U: the column the tags came from
    lm_tokenizers: list[dict[str, Any]] = field(default_factory=list)  # each LM's tokenizer (to_dict)
    kind: str = "tagger"

    def __post_init__(self) -> None:
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        self.char_ids = {c: i for i, c in enumerate(self.chars)}
        self.tag_ids = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def build(
        cls, sentences: Sequence[Sequence[str]], tags: Sequence[str], max_words: int = 50_000, **kw: Any
    ) -> TagVocab:
        """From the training sentences' words: the `max_words` most frequent words and every character."""
        counts = Counter(w for s in sentences for w in s)
        words = ["<pad>", "<unk>", *sorted(w for w, _ in counts.most_common(max_words - 2))]
        chars = ["<pad>", "<unk>", *sorted({c for s in sentences for w in s for c in w})]
        return cls(words, chars, list(tags), **kw)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "words": self.words,
            "chars": self.chars,
            "tags": self.tags,
            "scheme": self.scheme,
            "column": self.column,
            "lm_tokenizers": self.lm_tokenizers,
        }

    @classmethod
    def from_dict(cls, d: Any) -> TagVocab:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CheckpointError("tokenizer.json is not a tagger's vocabulary; the checkpoint is corrupt")
        try:
            return cls(d["words"], d["chars"], d["tags"], d["scheme"], d["column"], d["lm_tokenizers"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"tokenizer.json misses {exc}; the checkpoint is corrupt") from None

    def save(self, directory: str | os.PathLike[str]) -> None:
        atomic_write_json(Path(directory) / "tokenizer.json", self.to_dict())

    def word_id(self, word: str) -> int:
        return self.word_ids.get(word, UNK)

    def char_row(self, word: str) -> list[int]:
        return [self.char_ids.get(c, UNK) for c in word]
