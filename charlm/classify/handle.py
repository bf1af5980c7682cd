"""`Classifier`: a classify checkpoint loaded once, to label texts (with probabilities) and to evaluate a file.

    clf = charlm.load("checkpoints/reviews")          # checkpoint.json's "task": "classify"
    clf.classify(["a gorgeous, witty film", "tedious"])  # [Prediction(label='positive', ...), ...]
    clf.evaluate("dev.tsv").macro_f1

Texts are read as batches of about one length (sorted, then put back in order): no loop per text in torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.checkpoint import BEST, LAST, CheckpointInfo, load_model_tensors, load_tensors, locate, open_checkpoint
from charlm.classify.metrics import Report, multi_label_report, report
from charlm.classify.readers import Columns, Example, read_examples
from charlm.classify.vocab import FILE, ClassifierVocab
from charlm.errors import CheckpointError, ConfigError
from charlm.models import ClassifierConfig, TextClassifier

BATCH = 256  # texts per forward pass when classifying
THRESHOLD = 0.5  # multi-label: a label is given when its probability reaches this


@dataclass(frozen=True)
class Prediction:
    """A text's label (the most probable), its labels (multi-label: every label at 0.5 or more), and the
    probability of every label, most probable first."""

    text: str
    label: str
    labels: tuple[str, ...]
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "labels": list(self.labels),
            "probabilities": self.probabilities,
        }


def predict_probabilities(
    model: TextClassifier, vocab: ClassifierVocab, texts: Sequence[str], batch_size: int = BATCH
) -> np.ndarray:
    """(N, K) label probabilities of `texts`, read as batches of texts of about one length."""
    device = next(model.parameters()).device
    order = np.argsort(vocab.lengths(texts), kind="stable")
    out = np.zeros((len(texts), len(vocab.labels)), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                batch = vocab.encode([texts[i] for i in rows]).to(device)
                out[rows] = model.probabilities(model(batch)).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def score(probs: np.ndarray, examples: Sequence[Example], vocab: ClassifierVocab, multi_label: bool) -> Report:
    """The figures of predicted probabilities (N, K) against the examples' labels (unknown labels refused)."""
    labels = tuple(vocab.labels)
    unknown = sorted({x for e in examples for x in e.labels if x not in vocab.label_index})
    if unknown:
        e = next(e for e in examples if any(x in unknown for x in e.labels))
        raise ConfigError(
            f"line {e.line}: label {unknown[0]!r} is not one the model knows ({', '.join(labels)}); "
            "evaluate on data with the training labels"
        )
    if multi_label:
        gold = vocab.label_targets([e.labels for e in examples], True).numpy()
        eps = 1e-7
        p = np.clip(probs, eps, 1 - eps)
        loss = float(-(gold * np.log(p) + (1 - gold) * np.log(1 - p)).sum(1).mean()) if len(examples) else None
        return multi_label_report(gold, probs >= THRESHOLD, labels, loss)
    gold_i = np.array([vocab.label_index[e.labels[0]] for e in examples], dtype=np.int64)
    picked = probs[np.arange(len(gold_i)), gold_i] if len(gold_i) else np.zeros(0)
    loss = float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(gold_i) else None
    return report(gold_i, probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64), labels, loss)


class Classifier:
    """A loaded classifier: `classify(texts)` and `evaluate(file)`, with its labels and metadata."""

    def __init__(self, model: TextClassifier, vocab: ClassifierVocab, info: CheckpointInfo) -> None:
        self.model = model  # the network, in eval mode
        self.vocab = vocab
        self.info = info

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def kind(self) -> str:
        return "classify"

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.vocab.labels)

    @property
    def multi_label(self) -> bool:
        return self.model.config.multi_label

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        return (
            f"Classifier({str(self.path)!r}, labels={list(self.labels)!r}, "
            f"model={self.model.config.summary()!r}, device={str(self.device)!r})"
        )

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(N, K) probabilities, columns in the order of `labels`."""
        return predict_probabilities(self.model, self.vocab, _texts(texts))

    def classify(self, texts: str | Sequence[str]) -> Any:
        """A `Prediction` for a text, or a list of them for a list of texts."""
        if isinstance(texts, str):
            return self.classify([texts])[0]
        texts = _texts(texts)
        return self.predictions(texts, self.probabilities(texts))

    def predictions(self, texts: Sequence[str], probs: np.ndarray) -> list[Prediction]:
        """`Prediction`s from texts and their probabilities (N, K), as `classify` makes them."""
        labels = self.labels
        out = []
        for text, row in zip(texts, probs.tolist()):
            ranked = sorted(range(len(labels)), key=lambda k: -row[k])
            given = (
                tuple(labels[k] for k in ranked if row[k] >= THRESHOLD) if self.multi_label else (labels[ranked[0]],)
            )
            out.append(Prediction(text, labels[ranked[0]], given, {labels[k]: row[k] for k in ranked}))
        return out

    def evaluate(
        self,
        data: str | os.PathLike[str] | Sequence[Example],
        fmt: str | None = None,
        columns: Columns | None = None,
    ) -> Report:
        """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix on labelled data: a file
        (its format by extension or `fmt`; CSV/JSON fields by `columns`, default the run's) or examples."""
        if isinstance(data, (str, os.PathLike)):
            examples = read_examples(Path(data), fmt, columns or self.columns(), labelled=True)
        else:
            examples = list(data)
        probs = self.probabilities([e.text for e in examples])
        return score(probs, examples, self.vocab, self.multi_label)

    def columns(self) -> Columns:
        """The columns and label separator the model was trained with (what its data looked like)."""
        c = self.info.train_config.get("classify", {}) if isinstance(self.info.train_config, dict) else {}
        default = Columns()
        return Columns(
            str(c.get("text_column", default.text)),
            str(c.get("label_column", default.label)),
            str(c.get("label_separator", default.label_separator)),
        )


def _texts(texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ConfigError(f"classify takes a string or a list of strings, got {type(texts).__name__}")
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ConfigError(f"a text to classify is a string, got {type(bad).__name__}")
    return list(texts)


def load_classifier(
    path: str | os.PathLike[str], which: str = "best", device: torch.device | str = "cpu", verify: bool = True
) -> Classifier:
    """The classifier in a checkpoint directory written by `charlm train --model classify`."""
    info = open_checkpoint(Path(path))
    if not isinstance(info.model_config, ClassifierConfig):
        raise CheckpointError(f"{info.path} holds a language model, not a classifier; load it with charlm.load")
    vocab = ClassifierVocab.load(locate(info.path, FILE))
    if vocab.fingerprint() != info.meta.get("tokenizer", {}).get("sha256", vocab.fingerprint()):
        raise CheckpointError(
            f"{info.path}: {FILE} belongs to another run than checkpoint.json; the checkpoint is corrupt"
        )
    if len(vocab.labels) != info.model_config.num_labels:
        raise CheckpointError(
            f"{info.path}: {FILE} and checkpoint.json disagree on the labels; the checkpoint is corrupt"
        )
    file = locate(info.path, BEST if which == "best" else LAST)
    if which == "best" and not file.is_file():
        file = locate(info.path, LAST)
    tensors, _ = load_tensors(file, verify)
    model = TextClassifier(info.model_config)
    load_model_tensors(model, tensors, file)  # type: ignore[arg-type]  # any model the checkpoint code knows
    return Classifier(model.to(device).eval(), vocab, info)
