"""Scoring many short texts (candidate lines) as batches: each text from the zero state, read after a line end.

Each text is its own stream, exactly as `LanguageModel.score` reads one: the model reads the line-end
`context` id from the zero state, then the text's ids, and every id is predicted from all before it. Texts of
different lengths share a batch right-padded to the longest: a model reads left to right, so the padding
after a row's last id changes none of its predictions, and the padded targets are dropped. Texts are sorted
by length first, so a batch holds texts of about one length and little padding is computed.

    texts (ids):   [a b c] [d e] [f g h i]
    x (B, T):      <nl> a b .   <nl> d . .   <nl> f g h
    y (B, T):      a b c .      d e . .      f g h i        (. padding, never reported)

The same function scores an `exact_only` model (a Kneser-Ney model: its state is each row's own history).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from charlm.evaluation.streams import DEFAULT_WINDOW
from charlm.models import LOGIT_BUDGET, LanguageModel
from charlm.runtime import autocast, eval_mode

DEFAULT_ROWS = 128  # texts per batch (32 to 512 scored 10,000 lines at one speed, warm, on one CPU thread)
BATCH_TOKENS = 1 << 16  # at most this many padded positions per batch (rows x longest text)


@torch.no_grad()
def score_lines(
    model: LanguageModel,
    texts: Sequence[Sequence[int]],
    context: int,
    *,
    rows: int = DEFAULT_ROWS,
    window: int = DEFAULT_WINDOW,
    amp_dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """ln p(ids[t] | context, ids[:t]) of each text, (len(ids),) float64 on the CPU, in the order of `texts`.

    A text without ids gets an empty tensor. `rows` bounds the texts of a batch (and BATCH_TOKENS its
    padded size); the figures do not depend on either beyond float rounding.
    """
    if rows < 1 or window < 1:
        raise ValueError(f"rows and window must be at least 1, got {rows} and {window}")
    out: list[torch.Tensor] = [torch.zeros(0, dtype=torch.float64)] * len(texts)
    order = sorted((i for i in range(len(texts)) if len(texts[i])), key=lambda i: len(texts[i]))
    with eval_mode(model):  # type: ignore[arg-type]  # a LanguageModel is an nn.Module
        for batch in _batches(order, texts, rows):
            lps = _score_batch(model, [texts[i] for i in batch], context, window, amp_dtype)  # (B, T)
            for row, i in enumerate(batch):
                out[i] = lps[row, : len(texts[i])]  # a view: the batch tensor is kept, no copy per text
    return out


def _batches(order: list[int], texts: Sequence[Sequence[int]], rows: int) -> list[list[int]]:
    """Consecutive runs of `order` (sorted by length) of at most `rows` texts and BATCH_TOKENS padded ids."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = len(texts[i])  # sorted: the newest text is the longest of its batch
        if current and (len(current) >= rows or (len(current) + 1) * longest > BATCH_TOKENS):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _score_batch(
    model: LanguageModel, batch: list[Sequence[int]], context: int, window: int, amp_dtype: torch.dtype | None
) -> torch.Tensor:
    """Log-probabilities (B, T) float64 on the CPU of a batch of non-empty texts, right-padded to the longest."""
    device = model.device
    length = max(len(ids) for ids in batch)
    y = torch.full((len(batch), length), context, dtype=torch.long)  # (B, T): padding is any valid id
    for row, ids in enumerate(batch):
        y[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    x = torch.cat([torch.full((y.size(0), 1), context, dtype=torch.long), y[:, :-1]], dim=1)  # (B, T)
    x, y = x.to(device), y.to(device)
    if model.exact_only:
        t = length  # an n-gram model scores a row in one call (no (B, T, V) tensor)
    else:
        t = max(1, min(window, LOGIT_BUDGET // max(1, y.size(0) * model.vocab_size)))
    parts, state = [], None
    for i in range(0, length, t):
        with autocast(device, amp_dtype):
            nll, state = model.token_nll(x[:, i : i + t], state, y[:, i : i + t].contiguous())  # (B, t)
        parts.append(nll)
    return -torch.cat(parts, dim=1).double().cpu()  # (B, T)
