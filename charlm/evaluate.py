"""Scoring a token stream: the one implementation of the metric, used by training's
validation and by `charlm perplexity`.

Protocol: the stream is read left to right, each token predicted from all tokens
before it; the first token has no context and is not scored, so N tokens give
N - 1 scored predictions. No dropout (eval mode).

- exact (streams=1): one stream, state carried from window to window, starting
  from the zero state (or a state handed in, to continue a previous chunk).
- parallel (streams=S>1): the N - 1 predictions are cut into S contiguous
  segments scored side by side as a batch. Segment s > 0 starts from a state
  warmed (not scored) on the `warmup` tokens just before it, so it loses little
  context compared with the exact figure; segment 0 starts from the zero state.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.model import RNNLanguageModel, State

# Cap on the logits held at once (elements): B * T * V, so big vocabularies get shorter windows.
_LOGIT_BUDGET = 8 * 1024 * 1024


@dataclass
class StreamScore:
    """Summed negative log-likelihood (nats) over `tokens` scored predictions."""

    nll: float
    tokens: int
    state: State | None = None  # exact mode: the state after the last token, to continue a stream

    @property
    def loss(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.tokens else float("nan")


def _window_for(batch: int, vocab: int, window: int) -> int:
    return max(1, min(window, _LOGIT_BUDGET // max(1, batch * vocab)))


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def score_stream(
    model: RNNLanguageModel,
    ids: torch.Tensor,
    *,
    streams: int = 1,
    window: int = 256,
    warmup: int = 256,
    state: State | None = None,
    amp_dtype: torch.dtype | None = None,
) -> StreamScore:
    """Total NLL of predicting ids[1:] from the tokens before each; see the module doc.

    ids: (N,) int64 on the model's device. `state` (exact mode only) is the state
    before ids[0] was read, e.g. the returned state of the previous chunk when a
    long file is scored in pieces that overlap by one token.
    """
    was_training = model.training
    model.eval()
    try:
        device = ids.device
        inputs, targets = ids[:-1], ids[1:]  # (M,), (M,)
        m = inputs.numel()
        if m <= 0:
            return StreamScore(0.0, 0, state)
        vocab = model.config.vocab_size
        s = max(1, min(streams, m // max(1, warmup)))  # a segment is at least `warmup` long
        if s == 1:
            x, y = inputs[None, :], targets[None, :]  # (1, M)
            mask = None
            st = state
        else:
            seg = -(-m // s)  # ceil(M / S)
            pad = s * seg - m
            x = F.pad(inputs, (0, pad)).view(s, seg)  # (S, L)
            y = F.pad(targets, (0, pad)).view(s, seg)  # (S, L)
            mask = (torch.arange(s * seg, device=device) < m).view(s, seg)  # (S, L)
            w = min(warmup, seg)
            # Rows 1..S-1 warm up on the w inputs before their first prediction.
            starts = torch.arange(1, s, device=device) * seg  # (S-1,)
            warm_idx = starts[:, None] - w + torch.arange(w, device=device)[None, :]  # (S-1, w)
            with _autocast(device, amp_dtype):
                _, warm_state = model(inputs[warm_idx], None)
            zero = model.init_state(1, device=device)
            st = tuple(torch.cat([z, ws.to(z.dtype)], dim=1) for z, ws in zip(zero, warm_state))  # (L, S, H)
        total = torch.zeros((), dtype=torch.float64, device=device)
        t = _window_for(x.size(0), vocab, window)
        for i in range(0, x.size(1), t):
            with _autocast(device, amp_dtype):
                logits, st = model(x[:, i : i + t], st)  # (B, t, V)
            nll = F.cross_entropy(logits.float().reshape(-1, vocab), y[:, i : i + t].reshape(-1), reduction="none")
            if mask is not None:
                nll = nll * mask[:, i : i + t].reshape(-1)
            total += nll.sum(dtype=torch.float64)
        return StreamScore(float(total), m, st if s == 1 else None)
    finally:
        model.train(was_training)
