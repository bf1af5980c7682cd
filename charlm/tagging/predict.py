"""A tagger checkpoint loaded: tag sentences (with each tag's probability), evaluate a labelled file, and
write tagged sentences as CoNLL-U, column, word/TAG or JSON lines."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charlm.checkpoint import BEST, LAST, CheckpointInfo, load_model_tensors, load_tensors, locate, open_checkpoint
from charlm.data import Tokenizer
from charlm.embeddings import embed_batch
from charlm.errors import CheckpointError, ConfigError, CorpusError
from charlm.tagging.batch import encode
from charlm.tagging.data import COLUMNS, Sentence, read_labelled, read_raw, split_words
from charlm.tagging.labels import check_tags, from_internal, to_internal, training_tags
from charlm.tagging.metrics import TagScore, score
from charlm.tagging.model import Tagger, TaggerConfig
from charlm.tagging.schemes import constraints
from charlm.tagging.vocab import TagVocab

OUTPUT_FORMATS = ("conllu", "column", "slash", "json")


@dataclass(frozen=True)
class TaggedSentence:
    """A sentence's words, their predicted tags, and the probability the model gives each tag."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    confidences: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": list(self.words),
            "tags": list(self.tags),
            "confidences": [round(p, 4) for p in self.confidences],
        }


def load_tagger(
    path: str | os.PathLike[str], which: str = "best", device: str | torch.device = "cpu", verify: bool = True
) -> tuple[Tagger, TagVocab, CheckpointInfo]:
    """The tagger of a checkpoint directory (eval mode), its vocabulary and description."""
    info = open_checkpoint(Path(path))
    if info.meta.get("task") != "tag":
        raise CheckpointError(f"{info.path} holds no tagger (it was not trained with --model tag)")
    try:
        vocab = TagVocab.from_dict(json.loads(locate(info.path, "tokenizer.json").read_text(encoding="utf-8")))
        config = TaggerConfig.from_dict(info.model_config.to_dict())
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{info.path}: unreadable tagger description ({exc}); the checkpoint is corrupt"
        ) from None
    lm_tokenizers = [Tokenizer.from_dict(d) for d in vocab.lm_tokenizers]
    cons = constraints(vocab.tags, "bioes") if config.crf and vocab.scheme else None
    model = Tagger(config, cons, lm_tokenizers)
    weights = locate(info.path, BEST if which == "best" else LAST)
    if which == "best" and not weights.is_file():
        weights = locate(info.path, LAST)
    tensors, _ = load_tensors(weights, verify)
    load_model_tensors(model, tensors, weights)  # type: ignore[arg-type]
    return model.to(device).eval(), vocab, info


class SequenceTagger:
    """A loaded tagger: `tag` sentences, `evaluate` a labelled file (what `charlm tag` and `charlm evaluate` do)."""

    def __init__(self, model: Tagger, vocab: TagVocab, info: CheckpointInfo) -> None:
        self.model, self.vocab, self.info = model, vocab, info

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def tags(self) -> list[str]:
        """The tags it predicts, in the training file's scheme."""
        if self.vocab.scheme is None:
            return list(self.vocab.tags)
        return sorted({from_internal([t], self.vocab.scheme)[0] for t in self.vocab.tags})

    def __repr__(self) -> str:
        return f"SequenceTagger({str(self.path)!r}, {self.model.config.summary()})"

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[TaggedSentence]:
        """Tags and their probabilities for sentences given as words, in batches of about one length."""
        out: list[TaggedSentence | None] = [None] * len(sentences)
        order = sorted((i for i in range(len(sentences)) if len(sentences[i])), key=lambda i: len(sentences[i]))
        device = next(self.model.parameters()).device
        for a in range(0, len(order), batch_size):
            idx = order[a : a + batch_size]
            words = [list(sentences[i]) for i in idx]
            b = encode(self.vocab, words).to(device)
            with torch.no_grad():
                b.lm = embed_batch(self.model.embeddings, words)
            tags, probs = self.model.decode(b)
            for i, w, row, p in zip(idx, words, tags.tolist(), probs.tolist()):
                predicted = from_internal([self.vocab.tags[t] for t in row[: len(w)]], self.vocab.scheme)
                out[i] = TaggedSentence(tuple(w), tuple(predicted), tuple(p[: len(w)]))
        return [o if o is not None else TaggedSentence((), (), ()) for o in out]

    def tag(
        self, text: str | Sequence[str] | Sequence[Sequence[str]], pretokenized: bool = False
    ) -> list[TaggedSentence]:
        """Tag raw text (a string: one sentence per line), a list of sentences (strings, split into words by
        the word tokenizer's rule, or at whitespace when `pretokenized`), or a list of word lists."""
        if isinstance(text, str):
            words = [s.words for s in read_raw(text, pretokenized)]
        elif isinstance(text, Sequence):
            words = [split_words(s, pretokenized) if isinstance(s, str) else list(s) for s in text]
            if not all(isinstance(w, str) for s in words for w in s):
                raise ConfigError("tag takes a string, a list of strings or a list of word lists")
        else:
            raise ConfigError(f"tag takes a string or a list, got {type(text).__name__}")
        return self.predict(words)

    def evaluate(self, path: str | os.PathLike[str], batch_size: int = 64) -> TagScore:
        """Accuracy, entity figures and the per-tag table of the tagger on a labelled file."""
        sentences, _ = read_labelled(Path(path), self.vocab.column)
        scheme = None
        if self.vocab.scheme is not None:
            scheme = training_tags(sentences, None)
            if scheme is None:
                raise CorpusError(f"{path}: its tags are not span tags (B-X, I-X, O), the tagger's are")
        check_tags(sentences, scheme, str(path))
        known = set(self.vocab.tags)
        for s in sentences:
            for i, t in enumerate(to_internal(s.tags, scheme)):
                if t not in known:
                    raise CorpusError(
                        f"{path}:{s.lines[i]}: tag {s.tags[i]!r} is not one the tagger knows "
                        f"({', '.join(self.tags[:8])}{', ...' if len(self.tags) > 8 else ''})"
                    )
        tagged = self.predict([s.words for s in sentences], batch_size)
        pred = [from_internal(to_internal(t.tags, self.vocab.scheme), scheme) for t in tagged]
        return score([s.tags for s in sentences], pred, with_entities=scheme is not None)


def write_tagged(
    sentences: Sequence[Sentence], tagged: Sequence[TaggedSentence], fmt: str, column: str
) -> Iterator[str]:
    """The output lines (no line ends) of tagged sentences in `fmt` (OUTPUT_FORMATS)."""
    col = COLUMNS.get(column, 3)
    for s, t in zip(sentences, tagged):
        if fmt == "json":
            yield json.dumps(t.to_dict(), ensure_ascii=False)
        elif fmt == "slash":
            yield " ".join(f"{w}/{tag}" for w, tag in zip(t.words, t.tags))
        elif fmt == "column":
            yield from (f"{w}\t{tag}" for w, tag in zip(t.words, t.tags))
            yield ""
        elif s.rows:  # conllu, from a CoNLL-U sentence: its own lines with the tag column replaced
            rows = list(s.rows)
            for r, tag in zip(s.word_rows, t.tags):
                cols = rows[r].split("\t")
                cols[col] = tag
                rows[r] = "\t".join(cols)
            yield from rows
            yield ""
        else:  # conllu from words alone
            for i, (w, tag) in enumerate(zip(t.words, t.tags), start=1):
                cols = [str(i), w] + ["_"] * 8
                cols[col] = tag
                yield "\t".join(cols)
            yield ""
