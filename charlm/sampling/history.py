"""Logit filters that read what each row has generated so far: pure functions of tensors, each a new tensor.

    counts (B, V): how often each row has emitted each id   -> repetition, presence, frequency penalties
    history (B, T): the ids each row has emitted, in order   -> no-repeat n-gram
                    (left-padded with -1 for a row that joined a running batch later than the others)
    step: how many tokens each row has emitted               -> min_new_tokens

Only the generated ids count, not the prompt: a penalty steers the continuation away
from itself (a char model's prompt would otherwise make its own letters unlikely).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def token_counts(history: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """history (B, T) of ids -> counts (B, V): how many times each row emitted each id."""
    counts = torch.zeros(history.size(0), vocab_size, dtype=torch.long, device=history.device)
    return counts.scatter_add_(1, history, torch.ones_like(history))  # (B, V)


def repetition_penalty_filter(logits: torch.Tensor, counts: torch.Tensor, penalty: float) -> torch.Tensor:
    """Keskar et al. (CTRL), as Hugging Face applies it: an id already emitted has a positive logit divided
    by `penalty` and a negative one multiplied by it (both make it less likely for a penalty > 1)."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(counts > 0, penalised, logits)


def presence_frequency_filter(
    logits: torch.Tensor, counts: torch.Tensor, presence: float, frequency: float
) -> torch.Tensor:
    """OpenAI's penalties: logit - presence * [count > 0] - frequency * count."""
    return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts.to(logits.dtype)


def no_repeat_ngram_filter(logits: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """-inf for each id that would complete an n-gram the row has already emitted.

    The last n-1 ids are compared with every earlier window of n-1 ids at once;
    where they match, the id that followed that window is banned.
    """
    length = history.size(1)
    if length < n:
        return logits
    windows = history.unfold(1, n, 1)  # (B, T-n+1, n)
    prefix = history[:, length - n + 1 :]  # (B, n-1)
    match = (windows[:, :, : n - 1] == prefix[:, None, :]).all(-1)  # (B, T-n+1)
    follow = windows[:, :, n - 1]  # (B, T-n+1): the id after each window; -1 pads a row that joined a batch late
    match &= follow >= 0
    hits = torch.zeros_like(logits, dtype=torch.long).scatter_add_(1, follow.clamp(min=0), match.long())  # (B, V)
    return logits.masked_fill(hits > 0, float("-inf"))


def min_new_tokens_filter(
    logits: torch.Tensor, step: int | torch.Tensor, min_new_tokens: int, ending: Sequence[int]
) -> torch.Tensor:
    """Before `min_new_tokens` tokens are out (`step` counts them: an int, or one count per row (B,)), the
    `ending` ids (<eos>, a line end, the ids that could complete a stop string) get -inf: nothing can end
    the text early."""
    if not ending:
        return logits
    if isinstance(step, int):
        if step >= min_new_tokens:
            return logits
        out = logits.clone()
        out[..., list(ending)] = float("-inf")
        return out
    early = (step < min_new_tokens)[:, None]  # (B, 1)
    ids = torch.tensor(list(ending), dtype=torch.long, device=logits.device)
    masked = logits.index_fill(-1, ids, float("-inf"))
    return torch.where(early, masked, logits)


def banned_sequences_filter(
    logits: torch.Tensor, history: torch.Tensor, groups: Sequence[torch.Tensor]
) -> torch.Tensor:
    """-inf for each id that would complete a banned id sequence at the end of a row's history.

    `groups` holds the banned sequences by length, one (K, m) tensor per length m: all K are compared
    with the last m-1 ids of every row at once; a sequence of length 1 is banned outright.
    """
    out = logits
    for seqs in groups:
        m = seqs.size(1)
        if m == 1:
            out = out.index_fill(-1, seqs[:, 0], float("-inf"))
            continue
        if history.size(1) < m - 1:
            continue
        tail = history[:, history.size(1) - m + 1 :]  # (B, m-1)
        match = (tail[:, None, :] == seqs[None, :, :-1]).all(-1)  # (B, K)
        last = seqs[:, -1].expand(logits.size(0), -1)  # (B, K)
        hits = torch.zeros_like(logits, dtype=torch.long).scatter_add_(1, last, match.long())  # (B, V)
        out = out.masked_fill(hits > 0, float("-inf"))
    return out
