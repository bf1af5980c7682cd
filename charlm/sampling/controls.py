"""The history filters of one decoding run: what each row has emitted, kept on the device, and the filters
of `charlm.sampling.history` (then the user's `logits_processors`) applied from it. None of it exists when
every such control is off."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from charlm.sampling.history import (
    banned_sequences_filter,
    min_new_tokens_filter,
    no_repeat_ngram_filter,
    presence_frequency_filter,
    repetition_penalty_filter,
)
from charlm.sampling.options import DecodingOptions


class HistoryControls:
    """Rows' counts (B, V) and ids (B, T) as they grow; called on logits (B, V), it returns filtered logits."""

    def __init__(
        self,
        options: DecodingOptions,
        ending: Sequence[int],
        rows: int,
        vocab: int,
        device: torch.device,
        sequences: Sequence[Sequence[int]] = (),
    ):
        self.options, self.ending = options, tuple(ending)
        by_length: dict[int, list[Sequence[int]]] = {}
        for seq in sequences:
            by_length.setdefault(len(seq), []).append(seq)
        self.groups = [torch.tensor(g, dtype=torch.long, device=device) for g in by_length.values()]  # each (K, m)
        self.keep_history = (
            options.no_repeat_ngram_size is not None
            or bool(options.logits_processors)
            or any(len(s) > 1 for s in sequences)
        )
        self.step: int | torch.Tensor = 0  # tokens emitted: one int for rows started together, else (B,)
        o = options
        self.penalties = o.repetition_penalty != 1.0 or o.presence_penalty != 0.0 or o.frequency_penalty != 0.0
        self.counts = torch.zeros(rows, vocab, dtype=torch.long, device=device) if self.penalties else None
        self.history = torch.zeros(rows, 0, dtype=torch.long, device=device)  # (B, T), kept when a filter reads it

    @staticmethod
    def make(
        options: DecodingOptions,
        ending: Sequence[int],
        rows: int,
        vocab: int,
        device: torch.device,
        sequences: Sequence[Sequence[int]] = (),
    ) -> HistoryControls | None:
        """The controls, or None when all are at their neutral values (plain decoding pays nothing)."""
        on = options.history_filters or bool(sequences)
        return HistoryControls(options, ending, rows, vocab, device, sequences) if on else None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        o, out = self.options, logits
        if self.counts is not None:
            if o.repetition_penalty != 1.0:
                out = repetition_penalty_filter(out, self.counts, o.repetition_penalty)
            if o.presence_penalty != 0.0 or o.frequency_penalty != 0.0:
                out = presence_frequency_filter(out, self.counts, o.presence_penalty, o.frequency_penalty)
        if o.no_repeat_ngram_size is not None:
            out = no_repeat_ngram_filter(out, self.history, o.no_repeat_ngram_size)
        if o.min_new_tokens:
            out = min_new_tokens_filter(out, self.step, o.min_new_tokens, self.ending)
        if self.groups:
            out = banned_sequences_filter(out, self.history, self.groups)
        for f in o.logits_processors:
            out = f(out, self.history)
        # A row the controls left without any token (a long text under a small n-gram ban) draws from what
        # it had before them, rather than from nothing: NaN probabilities, or <unk> by argmax.
        stuck = torch.isneginf(out).all(-1, keepdim=True)  # (B, 1)
        return torch.where(stuck, logits, out)

    def record(self, ids: torch.Tensor) -> None:
        """The ids (B,) chosen this step."""
        self.step += 1
        if self.counts is not None:
            self.counts.scatter_add_(1, ids[:, None], torch.ones_like(ids[:, None]))
        if self.keep_history:
            self.history = torch.cat([self.history, ids[:, None]], 1)  # (B, T+1)

    def select(self, index: torch.Tensor) -> None:
        """Keep the rows `index` (B',), in that order (a batch whose rows end at different times)."""
        if isinstance(self.step, torch.Tensor):
            self.step = self.step[index]
        self.reorder(index)

    def extend(self, other: HistoryControls) -> None:
        """Append the rows of `other` (same options, started later): histories are right-aligned, the shorter
        ones left-padded with -1, and each row keeps its own count of tokens emitted."""
        rows, more = self.history.size(0), other.history.size(0)
        steps = [_steps(self.step, rows, self.history.device), _steps(other.step, more, self.history.device)]
        self.step = torch.cat(steps)
        if self.counts is not None and other.counts is not None:
            self.counts = torch.cat([self.counts, other.counts])
        t = max(self.history.size(1), other.history.size(1))
        self.history = torch.cat([_left_pad(self.history, t), _left_pad(other.history, t)])

    def reorder(self, parent: torch.Tensor) -> None:
        """Beam search: row i now continues row parent[i]."""
        if self.counts is not None:
            self.counts = self.counts[parent]
        self.history = self.history[parent]


def _steps(step: int | torch.Tensor, rows: int, device: torch.device) -> torch.Tensor:
    return step if isinstance(step, torch.Tensor) else torch.full((rows,), step, dtype=torch.long, device=device)


def _left_pad(history: torch.Tensor, length: int) -> torch.Tensor:
    """history (B, T) -> (B, length), -1 before the ids (an id no filter matches)."""
    if history.size(1) == length:
        return history
    pad = history.new_full((history.size(0), length - history.size(1)), -1)
    return torch.cat([pad, history], 1)
