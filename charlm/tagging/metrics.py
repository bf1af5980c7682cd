"""Figures of a tagging: token accuracy, conlleval's entity precision/recall/F1 (micro and per type), per-tag report.

Entities follow the CoNLL shared tasks' conlleval script: a predicted chunk counts when its type, first
and last token all equal a gold chunk's (`charlm.tagging.schemes.spans`), precision and recall are
micro-averaged over chunks, and the per-type figures count each type's chunks alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from charlm.tagging.schemes import spans


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float | int]:
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "predicted": predicted, "gold": gold, "correct": correct}


@dataclass(frozen=True)
class TagScore:
    """What `evaluate` reports: token accuracy, entity figures (spans only), and one row per tag."""

    tokens: int
    sentences: int
    accuracy: float
    entities: dict[str, float | int] | None = None  # precision, recall, f1, predicted, gold, correct (micro)
    per_type: dict[str, dict[str, float | int]] = field(default_factory=dict)
    per_tag: dict[str, dict[str, float | int]] = field(default_factory=dict)

    @property
    def f1(self) -> float | None:
        return None if self.entities is None else float(self.entities["f1"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "sentences": self.sentences,
            "accuracy": self.accuracy,
            "entities": self.entities,
            "per_type": self.per_type,
            "per_tag": self.per_tag,
        }


def entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Counter[str]]:
    """Chunks per type: {"gold": ..., "predicted": ..., "correct": ...}."""
    counts: dict[str, Counter[str]] = {"gold": Counter(), "predicted": Counter(), "correct": Counter()}
    for g, p in zip(gold, pred):
        gs, ps = spans(g), spans(p)
        counts["gold"].update(s[0] for s in gs)
        counts["predicted"].update(s[0] for s in ps)
        counts["correct"].update(s[0] for s in set(gs) & set(ps))
    return counts


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], with_entities: bool = True) -> TagScore:
    """The figures of predicted tags against gold tags, sentence by sentence (the same lengths)."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tags differ in shape")
    flat_g = [t for s in gold for t in s]
    flat_p = [t for s in pred for t in s]
    n = len(flat_g)
    right = sum(g == p for g, p in zip(flat_g, flat_p))
    per_tag = {}
    g_count, p_count = Counter(flat_g), Counter(flat_p)
    c_count = Counter(g for g, p in zip(flat_g, flat_p) if g == p)
    for tag in sorted(set(g_count) | set(p_count)):
        per_tag[tag] = _prf(c_count[tag], p_count[tag], g_count[tag])
    entities, per_type = None, {}
    if with_entities:
        c = entity_counts(gold, pred)
        entities = _prf(sum(c["correct"].values()), sum(c["predicted"].values()), sum(c["gold"].values()))
        for kind in sorted(set(c["gold"]) | set(c["predicted"])):
            per_type[kind] = _prf(c["correct"][kind], c["predicted"][kind], c["gold"][kind])
    return TagScore(n, len(gold), right / n if n else 0.0, entities, per_type, per_tag)


def report(s: TagScore) -> str:
    """A plain-text report: accuracy, entity figures by type (conlleval's layout), and the per-tag table."""
    lines = [f"sentences {s.sentences:,}, tokens {s.tokens:,}, accuracy {100 * s.accuracy:.2f}%"]
    if s.entities is not None:
        e = s.entities
        lines.append(
            f"entities: precision {100 * e['precision']:.2f}%, recall {100 * e['recall']:.2f}%, "
            f"F1 {100 * e['f1']:.2f} ({e['gold']} gold, {e['predicted']} predicted, {e['correct']} correct)"
        )
        for kind, r in s.per_type.items():
            lines.append(
                f"  {kind:>16}: precision {100 * r['precision']:6.2f}%, recall {100 * r['recall']:6.2f}%, "
                f"F1 {100 * r['f1']:6.2f}  ({r['gold']} gold, {r['predicted']} predicted)"
            )
    lines.append(f"{'tag':>16} {'precision':>9} {'recall':>7} {'F1':>7} {'gold':>7}")
    for tag, r in s.per_tag.items():
        lines.append(
            f"{tag:>16} {100 * r['precision']:9.2f} {100 * r['recall']:7.2f} {100 * r['f1']:7.2f} {r['gold']:7,}"
        )
    return "\n".join(lines)
