"""The options of a classify run (`charlm train DATA --model classify`): the training config's "classify" section.

Everything else a classifier needs comes from the sections every run has: --cell (lstm, gru), --layers,
--hidden (per direction), --emb (the word embedding), --dropout, --lr, --batch-size and the limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from charlm.classify.readers import FORMATS, Columns
from charlm.errors import ConfigError
from charlm.models import pooling_parts

CLASS_WEIGHTS = ("none", "balanced")


@dataclass(frozen=True)
class ClassifyOptions:
    """How a classify run reads its data and what it builds (None: chosen by charlm, see tasks/classify_setup)."""

    data_format: str | None = None  # tsv, csv, jsonl, fasttext; None: by the file's extension
    text_column: str = "text"  # csv and jsonl: the field holding the text
    label_column: str = "label"  # csv and jsonl: the field holding the label(s)
    label_separator: str = ","  # tsv, csv, jsonl: several labels in one field ("" : never split)
    multi_label: bool | None = None  # None: multi-label when some training text has several labels
    pooling: str | None = None  # mean, max, last or several joined by +; None: by encoder
    lm_forward: str | None = None  # a charlm language model's checkpoint: its features encode the text
    lm_backward: str | None = None  # one trained on reversed text, read over the text reversed
    finetune: bool = False  # train the language models too (default: frozen, only the head learns)
    class_weights: str = "none"  # balanced: each class weighted by N / (K x its count), for unbalanced data
    ngrams: bool = True  # stack a naive Bayes model of the words and word pairs (charlm.classify.naive_bayes)

    def __post_init__(self) -> None:
        checks = [
            (self.data_format is None or self.data_format in FORMATS,
             f"unknown --format {self.data_format!r}; choose {', '.join(FORMATS)}"),
            (self.class_weights in CLASS_WEIGHTS,
             f"unknown --class-weights {self.class_weights!r}; choose {', '.join(CLASS_WEIGHTS)}"),
            (bool(self.text_column) and bool(self.label_column), "--text-column and --label-column cannot be empty"),
            (not self.finetune or bool(self.lm_forward or self.lm_backward),
             "--finetune trains the language models given by --lm-forward/--lm-backward; give one, or drop it"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.pooling is not None:
            pooling_parts(self.pooling)

    @property
    def columns(self) -> Columns:
        return Columns(self.text_column, self.label_column, self.label_separator)

    @property
    def uses_lm(self) -> bool:
        return bool(self.lm_forward or self.lm_backward)
