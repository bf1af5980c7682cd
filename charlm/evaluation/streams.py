"""Scoring one token stream with a model: exact or in parallel rows, window by window.

Exact and parallel scoring (`score_stream`, `stream_logprobs`):
- exact (streams=1): one stream, state carried from window to window.
- parallel (streams=S>1): the predictions are cut into S contiguous segments
  scored side by side as a batch. Segment 0 continues from the state handed in;
  segment s > 0 starts from a state warmed (not scored) on the `warmup` tokens
  just before it. The returned state is the last segment's, so a following
  call continues that stream.

A model that is `exact_only` (a Kneser-Ney model: its state is the last N-1 tokens,
so a parallel segment warmed on `warmup` >= N-1 tokens would score exactly as one
stream does) is always scored as one stream, each row in one call, each token's
log-probability looked up in float64 (no (B, T, V) tensor).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from charlm.models import LOGIT_BUDGET, LanguageModel, State
from charlm.runtime import autocast, eval_mode

# Defaults of the parallel mode (also the CLI's). With 256 warm-up tokens per
# 4096-token segment the warm-up costs 6% extra compute.
DEFAULT_STREAMS = 32
DEFAULT_WINDOW = 256
DEFAULT_WARMUP = 256
DEFAULT_SEGMENT = 4096

Rows = Callable[[torch.Tensor, torch.Tensor, State | None], tuple[torch.Tensor, State]]  # (x, y, state) -> ..., state


@dataclass(frozen=True)
class Scoring:
    """How a stream is scored (see the module doc): exact (one stream) or parallel segments."""

    exact: bool = False
    streams: int = DEFAULT_STREAMS
    window: int = DEFAULT_WINDOW
    warmup: int = DEFAULT_WARMUP
    segment: int = DEFAULT_SEGMENT
    amp_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        for opt, value in (("streams", self.streams), ("window", self.window), ("segment", self.segment)):
            if value < 1:
                raise ValueError(f"{opt} must be at least 1, got {value}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be at least 0, got {self.warmup}")

    def to_dict(self) -> dict[str, Any]:
        """How the texts were scored, for a report (what does not apply to one exact stream is 1, 0 or None)."""
        return {
            "exact": self.exact,
            "streams": 1 if self.exact else self.streams,
            "window": self.window,
            "warmup": 0 if self.exact else self.warmup,
            "segment": None if self.exact else self.segment,
            "first_token": "scored after a line end",
        }


@dataclass
class StreamScore:
    """Summed negative log-likelihood (nats) over `tokens` scored predictions."""

    nll: float
    tokens: int
    state: State | None = None  # the state after the last input, to continue the stream

    @property
    def loss(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.tokens else float("nan")


def model_device(model: LanguageModel) -> torch.device:
    """Where the model computes: its `device` (a Kneser-Ney model's is its anchor buffer's)."""
    return model.device


def _window_for(batch: int, vocab: int, window: int) -> int:
    return max(1, min(window, LOGIT_BUDGET // max(1, batch * vocab)))


@dataclass(frozen=True)
class _Windows:
    """Rows x, y (B, L) scored window by window: row b reads x[b] from state[:, b] and predicts y[b].

    A window is at most `window` steps and LOGIT_BUDGET logits (a whole row for an `exact_only`
    model, which scores it in one call), under autocast to `amp_dtype`.
    """

    model: LanguageModel
    window: int
    amp_dtype: torch.dtype | None

    def nll(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> tuple[list[torch.Tensor], State]:
        """The NLL of each target, one (B, t) tensor per window (fp32; fp64 from an n-gram model), and the
        state after x."""
        model, (batch, length) = self.model, x.shape
        t = max(1, length) if model.exact_only else _window_for(batch, model.vocab_size, self.window)
        out = []
        for i in range(0, length, t):
            with autocast(x.device, self.amp_dtype):
                nll, state = model.token_nll(x[:, i : i + t], state, y[:, i : i + t])  # (B, t)
            out.append(nll)
        assert state is not None  # L >= 1: at least one window ran
        return out, state

    def total(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Summed NLL (float64 scalar) of the rows, and the final state."""
        parts, state = self.nll(x, y, state)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for nll in parts:
            total += nll.sum(dtype=torch.float64)
        return total, state

    def logprobs(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """ln p(y[b, t] | state, x[b, :t+1]) (B, L) float64 and the state after x: per-token figures, e.g. to mix
        two models (minus the NLL that `total` sums)."""
        parts, state = self.nll(x, y, state)
        return -torch.cat(parts, dim=1).double(), state


@torch.no_grad()
def score_stream(
    model: LanguageModel,
    ids: torch.Tensor,
    state: State | None = None,
    *,
    streams: int = 1,
    window: int = DEFAULT_WINDOW,
    warmup: int = DEFAULT_WARMUP,
    amp_dtype: torch.dtype | None = None,
) -> StreamScore:
    """Total NLL of predicting ids[1:] from the tokens before each; see the module doc.

    ids: (N,) int64 on the model's device. `state` is the state before ids[0]
    was read (None: the zero state), e.g. the returned state of the previous
    piece when a long stream is scored in pieces that overlap by one token.

    Parallel layout of the M = N - 1 predictions, S streams, L = M // S, r = M - S * L:

        [r predictions, scored first as one row from `state`]
        row 0:     L predictions, continuing from the state after those r
        row 1..S-1: L predictions each, from a state warmed on the `warmup` inputs before the row
        returned state: row S-1's, which ends at the last input
    """
    rows = _Windows(model, window, amp_dtype).total
    parts, last = _in_rows(model, ids, streams, warmup, state, amp_dtype, rows)
    total = torch.zeros((), dtype=torch.float64, device=ids.device)
    for nll in parts:
        total += nll
    return StreamScore(float(total), max(0, ids.numel() - 1), last)


@torch.no_grad()
def stream_logprobs(
    model: LanguageModel,
    ids: torch.Tensor,
    *,
    streams: int = 1,
    window: int = DEFAULT_WINDOW,
    warmup: int = DEFAULT_WARMUP,
    state: State | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, State | None]:
    """ln p(ids[t+1] | ids[:t+1]) for every t, (N-1,) float64 in stream order, and the state after ids[-2]:
    `score_stream`'s layout and figures (the sum of these is minus its NLL), one per token."""
    rows = _Windows(model, window, amp_dtype).logprobs
    parts, last = _in_rows(model, ids, streams, warmup, state, amp_dtype, rows)
    if not parts:
        return torch.zeros(0, dtype=torch.float64, device=ids.device), last
    return torch.cat([p.reshape(-1) for p in parts]), last  # row-major (S, L) is stream order


def _in_rows(
    model: LanguageModel,
    ids: torch.Tensor,
    streams: int,
    warmup: int,
    state: State | None,
    amp_dtype: torch.dtype | None,
    rows: Rows,
) -> tuple[list[torch.Tensor], State | None]:
    """The parallel layout of `score_stream` with `rows(x, y, state)` scoring the rows: its results (the
    prefix row's, if any, then the S rows') and the state after the last input."""
    with eval_mode(model):  # type: ignore[arg-type]  # a LanguageModel is an nn.Module
        device = ids.device
        inputs, targets = ids[:-1], ids[1:]  # (M,), (M,)
        m = inputs.numel()
        if m <= 0:
            return [], state
        if model.exact_only:
            streams = 1  # exact at no cost: see the module doc
        s = max(1, min(streams, m // max(1, warmup)))  # a segment is at least `warmup` long
        seg = m // s
        r = m - s * seg  # < s
        out = []
        st = state
        if r:
            first, st = rows(inputs[None, :r], targets[None, :r], st)
            out.append(first)
        x = inputs[r:].view(s, seg)  # (S, L)
        y = targets[r:].view(s, seg)  # (S, L)
        if s > 1:
            w = min(warmup, seg)
            starts = r + torch.arange(1, s, device=device) * seg  # (S-1,)
            warm_idx = starts[:, None] - w + torch.arange(w, device=device)[None, :]  # (S-1, w)
            with autocast(device, amp_dtype):
                warm = model.warm_state(inputs[warm_idx])
            head = st if st is not None else model.init_state(1, device=device)
            st = tuple(torch.cat([f, ws.to(f.dtype)], dim=1) for f, ws in zip(head, warm))  # each (L, S, H)
        main, st = rows(x, y, st)
        out.append(main)
        last = tuple(t[:, -1:].contiguous() for t in st)  # (L, 1, H): the stream's state after ids[-2]
        return out, last


@torch.no_grad()
def sampled_nll(
    model: LanguageModel, ids: np.ndarray, context: int, max_tokens: int, scoring: Scoring
) -> tuple[float, int]:
    """NLL of about `max_tokens` tokens of `ids` in evenly spaced segments: (summed NLL, tokens scored).

    The first segment starts the stream (read after `context`, from the zero
    state); every other one starts from a state warmed on the `warmup` tokens
    before it, as the parallel mode of `score_stream` warms its rows.
    """
    with eval_mode(model):  # type: ignore[arg-type]  # a LanguageModel is an nn.Module
        device = model.device
        rows = max(1, -(-max_tokens // scoring.segment))  # segments of at most `segment` tokens
        seg = max_tokens // rows
        w = min(scoring.warmup, max(0, len(ids) - seg - 1))
        starts = np.linspace(w + 1, len(ids) - seg, rows - 1).round().astype(np.int64)  # targets t..t+seg of rows 1..
        score = _Windows(model, scoring.window, scoring.amp_dtype).total

        def take(a: int, b: int) -> np.ndarray:
            return np.asarray(ids[a:b], dtype=np.int64)

        first_x = np.concatenate([[context], take(0, seg - 1)])
        x0, y0 = (torch.from_numpy(a)[None].to(device) for a in (first_x, take(0, seg)))
        total, _ = score(x0, y0, None)
        if rows == 1:
            return float(total), seg
        x = torch.from_numpy(np.stack([take(t - 1, t - 1 + seg) for t in starts])).to(device)  # (S-1, seg)
        y = torch.from_numpy(np.stack([take(t, t + seg) for t in starts])).to(device)
        warm = torch.from_numpy(np.stack([take(t - 1 - w, t - 1) for t in starts])).to(device)  # (S-1, w)
        with autocast(device, scoring.amp_dtype):
            state = model.warm_state(warm) if w else None
        rest, _ = score(x, y, state)
        return float(total + rest), seg * rows
