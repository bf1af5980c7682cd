"""A text classifier: a sentence read by a recurrent encoder, pooled over its positions, then a small head.

Two encoders, one head:

    words   word embedding ++ a character CNN of each word (so unseen words still say something)
            -> bidirectional LSTM/GRU layers (the backward one over each text reversed within its length)
    lm      the features of one or two charlm language models (`RNNLanguageModel.features`) read over
            the text, the backward one over the text reversed; frozen unless `finetune`

    pooled over the valid positions (mean, max, last, or several joined with "+")
    -> LayerNorm -> dropout -> linear: logits (B, K), plus (`ngrams`) a naive Bayes model's scores of the
    text's words and word pairs, times a learnt weight per label; softmax over labels, or one sigmoid each

The batch is a `ClassifierInput`; text becomes ids in `charlm.classify` (its vocabulary), never here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from charlm.errors import ConfigError
from charlm.models.rnn import ModelConfig, RNNLanguageModel

ENCODERS = ("words", "lm")
POOLINGS = ("mean", "max", "last")
CLASSIFIER_CELLS = ("lstm", "gru")


def pooling_parts(pooling: str) -> tuple[str, ...]:
    """'mean+max' -> ('mean', 'max'); ConfigError naming the choices for anything else."""
    parts = tuple(p.strip() for p in pooling.split("+"))
    if not parts or any(p not in POOLINGS for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"unknown pooling {pooling!r}; choose {', '.join(POOLINGS)}, or several joined by +")
    return parts


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild a classifier's shape; checkpoint.json's "model" of a classify run."""

    kind: ClassVar[str] = "classify"
    tie_weights: ClassVar[bool] = False  # what the checkpoint code asks every model (no tensor is stored twice)
    num_labels: int
    multi_label: bool = False
    encoder: str = "words"
    vocab_size: int = 2  # words (0: padding, 1: unknown)
    char_vocab_size: int = 2  # characters of words (0: padding, 1: unknown)
    word_emb: int = 100
    char_emb: int = 32
    char_channels: int = 64
    cell: str = "lstm"
    num_layers: int = 1
    hidden_size: int = 128  # per direction
    pooling: str = "max"
    dropout: float = 0.5
    lm_forward: dict[str, Any] | None = None  # the language models' own ModelConfig dicts
    lm_backward: dict[str, Any] | None = None
    finetune: bool = False
    ngrams: int = 0  # n-grams of the stacked naive Bayes model (charlm.classify.naive_bayes); 0: none

    def __post_init__(self) -> None:
        pooling_parts(self.pooling)
        checks = [
            (self.encoder in ENCODERS, f"unknown encoder {self.encoder!r}; choose {', '.join(ENCODERS)}"),
            (self.cell in CLASSIFIER_CELLS, f"a classifier's --cell is lstm or gru, got {self.cell!r}"),
            (self.num_labels >= 1, f"a classifier needs labels, got {self.num_labels}"),
            (0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}"),
            (self.encoder == "words" or self.lm_forward or self.lm_backward, "an lm encoder needs a language model"),
        ]
        for name in ("vocab_size", "char_vocab_size", "word_emb", "char_emb", "char_channels", "num_layers"):
            checks.append((getattr(self, name) >= 1, f"{name.replace('_', '-')} must be at least 1"))
        checks.append((self.hidden_size >= 1, "--hidden must be at least 1"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def language_models(self) -> tuple[tuple[str, ModelConfig], ...]:
        """(direction, config) of each language model read: "forward" and/or "backward"."""
        given = (("forward", self.lm_forward), ("backward", self.lm_backward))
        return tuple((name, ModelConfig.from_dict(d)) for name, d in given if d)

    def summary(self) -> str:
        """'BiLSTM 1 x 128, max pooling' or 'forward+backward LM features (frozen), mean+max+last pooling'."""
        if self.encoder == "words":
            return f"Bi{self.cell.upper()} {self.num_layers} x {self.hidden_size}, {self.pooling} pooling"
        names = "+".join(name for name, _ in self.language_models)
        how = "fine-tuned" if self.finetune else "frozen"
        return f"{names} LM features ({how}), {self.pooling} pooling"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model options {sorted(unknown)}; was this checkpoint made by a newer charlm?")
        return cls(**d)

    def with_(self, **changes: Any) -> ClassifierConfig:
        return replace(self, **changes)


@dataclass
class ClassifierInput:
    """One batch as the classifier reads it (on one device). The words encoder reads `words` and the
    character rows of the batch's word types; the lm encoder `lm_ids`, or `pooled` features already read."""

    lengths: torch.Tensor  # (B,) positions of each text (words, or each LM's tokens for `lm_lengths`)
    words: torch.Tensor | None = None  # (B, T) word ids, 0 after the end
    type_chars: torch.Tensor | None = None  # (U, C) character ids of the batch's distinct word types
    type_index: torch.Tensor | None = None  # (B, T) each position's row of type_chars
    lm_ids: tuple[torch.Tensor, ...] = ()  # one (B, T_i) per language model, from its line-start token
    lm_lengths: tuple[torch.Tensor, ...] = ()  # (B,) each
    pooled: torch.Tensor | None = None  # (B, F) the language models' pooled features, computed once
    ngram_ids: torch.Tensor | None = None  # (N,) the n-grams of every text, one after the other ...
    ngram_offsets: torch.Tensor | None = None  # (B,) ... each text's first
    ngram_logits: torch.Tensor | None = None  # (B, K) naive Bayes scores given (training's are cross-fitted)

    def to(self, device: torch.device) -> ClassifierInput:
        def move(t: Any) -> Any:
            return t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t

        return ClassifierInput(
            move(self.lengths),
            move(self.words),
            move(self.type_chars),
            move(self.type_index),
            tuple(move(t) for t in self.lm_ids),
            tuple(move(t) for t in self.lm_lengths),
            move(self.pooled),
            move(self.ngram_ids),
            move(self.ngram_offsets),
            move(self.ngram_logits),
        )


def pool(
    h: torch.Tensor, lengths: torch.Tensor, parts: tuple[str, ...], last: torch.Tensor | None = None
) -> torch.Tensor:
    """h (B, T, D) over its first `lengths` positions -> (B, D x len(parts)). `last` (B, D) replaces the
    state at the last position (a bidirectional encoder's: forward end ++ backward start)."""
    B, T, _ = h.shape
    mask = torch.arange(T, device=h.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    out = []
    for part in parts:
        if part == "mean":
            out.append((h * mask.unsqueeze(-1)).sum(1) / lengths.clamp(min=1).unsqueeze(1).to(h.dtype))
        elif part == "max":
            out.append(h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1))
        else:
            out.append(last if last is not None else h[torch.arange(B, device=h.device), lengths - 1])
    return torch.cat(out, dim=-1)  # (B, D x parts)


def _reader(config: ModelConfig) -> RNNLanguageModel:
    """A language model without its output layer: the classifier reads its features, never its predictions."""
    lm = RNNLanguageModel(config)
    del lm.decoder  # with tied weights, the embedding itself stays
    lm.clusters = None
    return lm


def reader_tensors(lm: RNNLanguageModel) -> dict[str, torch.Tensor]:
    """The weights of a trained language model that a classifier's copy of it (`_reader`) holds."""
    return {k: v for k, v in lm.state_dict().items() if not k.startswith(("decoder.", "clusters."))}


def reverse_index(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T, 1) gather index that reverses each row's first `lengths` positions and keeps the padding after
    them in place; applied twice it is the identity. A backward RNN over the gathered rows reads each text
    from its end, with no packing (torch's fused layers run padded batches several times faster)."""
    t = torch.arange(T, device=lengths.device).unsqueeze(0)  # (1, T)
    n = lengths.unsqueeze(1)  # (B, 1)
    return torch.where(t < n, n - 1 - t, t).unsqueeze(-1)


class TextClassifier(nn.Module):
    """A recurrent text classifier (see the module doc): `forward(ClassifierInput) -> logits (B, K)`."""

    kind = "classify"

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.parts = pooling_parts(config.pooling)
        c = config
        if c.encoder == "words":
            self.words = nn.Embedding(c.vocab_size, c.word_emb, padding_idx=0)
            self.chars = nn.Embedding(c.char_vocab_size, c.char_emb, padding_idx=0)
            self.char_conv = nn.Conv1d(c.char_emb, c.char_channels, kernel_size=3, padding=1)
            rnn = nn.LSTM if c.cell == "lstm" else nn.GRU
            sizes = [c.word_emb + c.char_channels] + [2 * c.hidden_size] * (c.num_layers - 1)
            self.forward_layers = nn.ModuleList(rnn(n, c.hidden_size, batch_first=True) for n in sizes)
            self.backward_layers = nn.ModuleList(rnn(n, c.hidden_size, batch_first=True) for n in sizes)
            width = 2 * c.hidden_size
        else:
            readers = [_reader(lm) for _, lm in c.language_models]
            self.lms = nn.ModuleList(readers)
            for p in self.lms.parameters():
                p.requires_grad_(c.finetune)
            width = sum(self.lm_width(lm) for lm in readers)
        self.feature_size = width * len(self.parts)
        self.norm = nn.LayerNorm(self.feature_size)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(self.feature_size, c.num_labels)
        if c.ngrams:  # naive Bayes' table is fitted, not trained: only its weight per label learns
            self.ngram_weight = nn.Parameter(torch.zeros(c.ngrams, c.num_labels), requires_grad=False)
            self.ngram_bias = nn.Parameter(torch.zeros(c.num_labels), requires_grad=False)
            self.ngram_gate = nn.Parameter(torch.ones(c.num_labels))

    @staticmethod
    def lm_width(lm: RNNLanguageModel) -> int:
        c = lm.config
        return c.emb_size if (c.tie_weights and c.emb_size != c.hidden_size) else c.hidden_size

    def train(self, mode: bool = True) -> TextClassifier:
        super().train(mode)
        if self.config.encoder == "lm" and not self.config.finetune:
            self.lms.eval()  # a frozen language model reads as it does at inference: no dropout
        return self

    def num_parameters(self, trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)

    def forward(self, batch: ClassifierInput) -> torch.Tensor:
        """batch -> logits (B, K)."""
        return self.head(self.encode(batch), batch)

    def head(self, features: torch.Tensor, batch: ClassifierInput) -> torch.Tensor:
        """Pooled features (B, F) -> logits (B, K), with naive Bayes' scores of the batch's n-grams added."""
        logits = self.out(self.drop(self.norm(features)))  # (B, K)
        if not self.config.ngrams:
            return logits
        nb = batch.ngram_logits
        if nb is None:
            assert batch.ngram_ids is not None and batch.ngram_offsets is not None
            nb = F.embedding_bag(batch.ngram_ids, self.ngram_weight, batch.ngram_offsets, mode="sum") + self.ngram_bias
        return logits + self.ngram_gate * nb  # (B, K)

    def encode(self, batch: ClassifierInput) -> torch.Tensor:
        """The pooled features (B, F) of a batch."""
        if batch.pooled is not None:
            return batch.pooled
        if self.config.encoder == "words":
            return self.encode_words(batch)
        with torch.set_grad_enabled(self.config.finetune and torch.is_grad_enabled()):
            return self.encode_lms(batch)

    def encode_words(self, batch: ClassifierInput) -> torch.Tensor:
        assert batch.words is not None and batch.type_chars is not None and batch.type_index is not None
        chars = self.chars(batch.type_chars).transpose(1, 2)  # (U, E_c, C)
        conv = self.char_conv(chars)  # (U, channels, C): each type's characters read once
        inside = (batch.type_chars != 0).unsqueeze(1)  # (U, 1, C): a type's max never sees the batch's padding
        per_type = conv.masked_fill(~inside, float("-inf")).amax(-1)  # (U, channels)
        x = torch.cat([self.words(batch.words), per_type[batch.type_index]], dim=-1)  # (B, T, E + channels)
        lengths = batch.lengths.clamp(min=1)
        flip = reverse_index(lengths, x.size(1))  # (B, T, 1): each text reversed within its length
        h = self.drop(x)
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if i > 0:
                h = self.drop(h)
            ahead, _ = fwd(h)  # (B, T, H): padding comes after each text, so it never reaches its states
            back, _ = bwd(h.gather(1, flip.expand(-1, -1, h.size(-1))))  # (B, T, H), over the reversed text
            back = back.gather(1, flip.expand(-1, -1, back.size(-1)))  # back in reading order
            h = torch.cat([ahead, back], dim=-1)  # (B, T, 2H)
        H = self.config.hidden_size
        ends = h[torch.arange(h.size(0), device=h.device), lengths - 1, :H]  # forward's state after the text
        last = torch.cat([ends, h[:, 0, H:]], dim=-1)  # ++ backward's after reading it from the end: (B, 2H)
        return pool(h, lengths, self.parts, last)

    def encode_lms(self, batch: ClassifierInput) -> torch.Tensor:
        out = []
        for lm, ids, lengths in zip(self.lms, batch.lm_ids, batch.lm_lengths):
            h, _ = lm.features(ids)  # type: ignore[operator]  # (B, T, D); padding after a text never reaches it
            out.append(pool(h.float(), lengths, self.parts))
        return torch.cat(out, dim=-1)  # (B, F)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K): a softmax over labels, or each label's own sigmoid (multi-label)."""
        return torch.sigmoid(logits) if self.config.multi_label else torch.softmax(logits.float(), dim=-1)
