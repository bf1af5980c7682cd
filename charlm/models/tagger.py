"""The options of a sequence tagger (`--model tag`): what rebuilds its shape from checkpoint.json's "model".

The network itself is `charlm.tagging.Tagger` (it reads batches of the tagging room); the options live
here so that the table of model kinds (`charlm.models.kinds`) can read them like any model's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class TaggerConfig:
    """A tagger's shape; checkpoint.json stores `to_dict()` as its "model" (and "task": "tag")."""

    num_words: int
    num_chars: int
    num_tags: int
    word_emb: int = 100
    char_emb: int = 32
    char_hidden: int = 32  # per direction
    hidden_size: int = 256  # per direction
    num_layers: int = 1
    cell: str = "lstm"
    dropout: float = 0.33
    word_dropout: float = 0.05  # training words read as <unk>, so the model learns what to do with one
    crf: bool = True
    lms: tuple[dict[str, Any], ...] = ()  # the character LMs read (frozen): {"model": options, "reverse": bool}

    kind: ClassVar[str] = "tag"  # --model tag; checkpoint.json's "model_kind"
    task: ClassVar[str] = "tag"  # checkpoint.json's "task": not a language model
    tie_weights: ClassVar[bool] = False  # what the checkpoint code asks every model

    @property
    def vocab_size(self) -> int:
        return self.num_words

    @property
    def state_floats(self) -> int:
        return 0

    def summary(self) -> str:
        lm = f" + {len(self.lms)} char LM embeddings" if self.lms else ""
        head = "CRF" if self.crf else "softmax"
        return f"{self.num_layers} x {self.hidden_size} Bi{self.cell.upper()}{lm}, {head} over {self.num_tags} tags"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaggerConfig:
        return cls(**{**d, "lms": tuple(d.get("lms", ()))})
