"""How well labels were predicted: accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix.

Conventions are scikit-learn's (its `classification_report` with `zero_division=0`, the tests' oracle):
a class never predicted has precision 0, one never in the gold labels recall 0, and macro-F1 is the mean
of the per-class F1s over every label of the model. Multi-label data is scored per label (a text counts
for each label it has or is given); its accuracy is the share of texts whose set of labels is exactly right,
and micro-F1 pools every decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassScore:
    """One label's figures."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int  # gold texts with this label


@dataclass(frozen=True)
class Report:
    """The figures of one evaluation (`report` or `multi_label_report`)."""

    labels: tuple[str, ...]
    examples: int
    accuracy: float
    macro_f1: float
    micro_f1: float
    classes: tuple[ClassScore, ...]
    confusion: np.ndarray | None  # (K, K) counts, rows gold, columns predicted (single-label only)
    multi_label: bool = False
    loss: float | None = None  # mean cross-entropy per text, where the probabilities were known

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "micro_f1": self.micro_f1,
            "loss": self.loss,
            "multi_label": self.multi_label,
            "classes": [vars(c) for c in self.classes],
            "labels": list(self.labels),
            "confusion": self.confusion.tolist() if self.confusion is not None else None,
        }


def confusion_matrix(gold: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts: [i, j] texts of gold label i predicted as j."""
    return np.bincount(gold * k + predicted, minlength=k * k).reshape(k, k)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros(a.shape, dtype=float), where=b > 0)

    p, r = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return p, r, ratio(2 * p * r, p + r)


def report(gold: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...], loss: float | None = None) -> Report:
    """Single-label figures from gold and predicted label indices (N,)."""
    gold, predicted = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    k = len(labels)
    cm = confusion_matrix(gold, predicted, k)
    tp = np.diag(cm).astype(float)
    p, r, f = _prf(tp, cm.sum(0) - tp, cm.sum(1) - tp)
    n = len(gold)
    accuracy = float(tp.sum() / n) if n else 0.0
    classes = tuple(
        ClassScore(x, float(p[i]), float(r[i]), float(f[i]), int(cm[i].sum())) for i, x in enumerate(labels)
    )
    return Report(tuple(labels), n, accuracy, float(f.mean()) if k else 0.0, accuracy, classes, cm, False, loss)


def multi_label_report(
    gold: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...], loss: float | None = None
) -> Report:
    """Multi-label figures from gold and predicted 0/1 matrices (N, K)."""
    g, q = np.asarray(gold, dtype=bool), np.asarray(predicted, dtype=bool)
    tp, fp, fn = (g & q).sum(0).astype(float), (~g & q).sum(0).astype(float), (g & ~q).sum(0).astype(float)
    p, r, f = _prf(tp, fp, fn)
    micro = _prf(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[2]
    n = len(g)
    exact = float((g == q).all(1).mean()) if n else 0.0
    classes = tuple(
        ClassScore(x, float(p[i]), float(r[i]), float(f[i]), int(g[:, i].sum())) for i, x in enumerate(labels)
    )
    macro = float(f.mean()) if len(labels) else 0.0
    return Report(tuple(labels), n, exact, macro, float(micro[0]), classes, None, True, loss)


def table_rows(r: Report) -> list[list[str]]:
    """The per-class table as rows of text (label, precision, recall, F1, support), then macro and accuracy."""
    rows = [[c.label, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", f"{c.support:,}"] for c in r.classes]
    rows.append(["macro average", f"{np.mean([c.precision for c in r.classes]):.3f}",
                 f"{np.mean([c.recall for c in r.classes]):.3f}", f"{r.macro_f1:.3f}", f"{r.examples:,}"])  # fmt: skip
    return rows


def confusion_rows(r: Report) -> list[list[str]]:
    """The confusion matrix as text rows: a header of predicted labels, then one row per gold label."""
    assert r.confusion is not None
    return [["gold \\ predicted", *r.labels]] + [
        [label, *(f"{v:,}" for v in row)] for label, row in zip(r.labels, r.confusion.tolist())
    ]
