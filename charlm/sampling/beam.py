"""Beam search: B hypotheses as one batch, scored by sum(log p) / length^alpha.

Beams are the batch dimension: scores (B,), state (L, B, H), reordered after
each step to follow the surviving parents. Live hypotheses all have the same
length, so they are ranked by the raw sum; a finished one is scored by
sum(log p) / length^alpha (alpha = `length_penalty`; 0 is the raw sum). A
hypothesis finishes at <eos> (its `eos_target`-th), at a stop string or line
limit (the `finisher` reports those), or at the length limit; every finishing
continuation of every live hypothesis is kept as a finished candidate.

When to stop before the length limit:
- exact (`exact=True`): when no live hypothesis can still beat the n-th best
  finished one. Its best possible score is sum / max_len^alpha (log p <= 0), so
  a beam as wide as the number of sequences is an exhaustive search up to
  `max_new_tokens`, and a long limit is searched to its end.
- default: when no live hypothesis scores, at its current length, better than
  the n-th best finished one (the usual heuristic, as in Hugging Face's
  `early_stopping=False`). It ends as soon as the good hypotheses have finished,
  however long the limit; with alpha = 0 it is exact, since sums only fall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from charlm.models import State, reorder_state
from charlm.sampling.filters import ban
from charlm.sampling.protocols import DecodingModel, TextCodec
from charlm.sampling.text import Plan, TextTracker


@dataclass
class Hypothesis:
    """A finished beam hypothesis: generated ids, sum of log-probs, normalised score."""

    ids: list[int]
    logprob: float
    score: float
    reached_eos: bool


class BeamFinisher(Protocol):
    """Host-side stop rule for beam search (stop strings): sees each step's candidates."""

    def start(self, width: int) -> None: ...
    def check(self, parents: list[int], tokens: list[int], alive: list[bool]) -> list[bool]: ...
    def commit(self, chosen: list[int]) -> None: ...


class BeamTextFinisher:
    """Stop strings / line limit for beam search: one text tracker per live hypothesis."""

    def __init__(self, tokenizer: TextCodec, plan: Plan) -> None:
        self._tok, self._plan = tokenizer, plan
        self._live: list[TextTracker | None] = []
        self._cands: list[TextTracker | None] = []

    def start(self, width: int) -> None:
        self._live = [self._plan.tracker(self._tok)] * width  # every slot starts from the prompt

    def check(self, parents: list[int], tokens: list[int], alive: list[bool]) -> list[bool]:
        self._cands = []
        for p, t, a in zip(parents, tokens, alive):
            parent = self._live[p]
            if not a or parent is None:  # a dead (-inf) candidate: nothing to read
                self._cands.append(None)
                continue
            tr = parent.copy()
            tr.push([t])
            self._cands.append(tr)
        return [tr is not None and tr.stopped for tr in self._cands]

    def commit(self, chosen: list[int]) -> None:
        self._live = [self._cands[i] for i in chosen]


def length_normalised(logprob: Any, length: Any, alpha: float) -> Any:
    """Beam score: sum(log p) / length^alpha (alpha = 0: the raw sum)."""
    if alpha == 0:
        return logprob
    return logprob / (length**alpha)


@torch.no_grad()
def beam_search(
    model: DecodingModel,
    logits: torch.Tensor,
    state: State,
    *,
    width: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    n_best: int | None = None,
    eos_id: int | None = None,
    eos_target: int = 1,
    finisher: BeamFinisher | None = None,
    exact: bool = False,
    banned: Sequence[int] = (),
) -> list[Hypothesis]:
    """The n best hypotheses (best first) continuing from `state`, whose next-token logits are `logits` (1, V).

    Beams are the batch: scores (B,), state (L, B, H), reordered after each step to
    follow the surviving parents; unused slots hold score -inf (at the start only
    one hypothesis exists). Each step ranks the B x V continuations and takes the
    best 2B: those that end a hypothesis (its `eos_target`-th <eos>, or a stop the
    `finisher` reports) are kept as finished when ranked within the first B; the
    first B of the others live on. At `max_new_tokens` every continuation is complete.
    `banned` ids are never chosen; `exact` selects the early stop (module doc).
    """
    B, V = width, logits.size(-1)
    n_best = n_best or width
    alpha = float(length_penalty)
    device = logits.device
    neg_inf = torch.tensor(float("-inf"), device=device)
    scores = torch.full((B,), float("-inf"), device=device)  # (B,) sum of log p of each live hypothesis
    scores[0] = 0.0
    state = reorder_state(state, torch.zeros(B, dtype=torch.long, device=device))  # each (L, B, H)
    logits = logits.expand(B, V)
    eos_seen = torch.zeros(B, dtype=torch.long, device=device)  # (B,) <eos> tokens in each hypothesis
    k = min(2 * B, B * V)
    rank = torch.arange(k, device=device)
    hist_tok: list[torch.Tensor] = []  # step t-1 -> (B,) last token of each slot
    hist_parent: list[torch.Tensor] = []  # step t-1 -> (B,) slot it continued
    fin: list[_Finished] = []
    best_fin = torch.empty(0, device=device)  # the n best normalised finished scores so far
    can_finish_early = eos_id is not None or finisher is not None
    horizon = float(max_new_tokens) ** alpha
    if finisher is not None:
        finisher.start(B)
    for t in range(1, max_new_tokens + 1):
        cand = ban(scores[:, None] + F.log_softmax(logits.float(), dim=-1), banned).reshape(-1)  # (B * V,)
        last = t == max_new_tokens
        top, idx = cand.topk(min(n_best, B * V) if last else k)  # best first
        parent, token = idx // V, idx % V
        at_eos = (
            (token == eos_id) & (eos_seen[parent] == eos_target - 1)
            if eos_id is not None
            else torch.zeros_like(token, dtype=torch.bool)
        )
        if last:  # every continuation is complete; same length, so the raw sum ranks them
            fin.append(_Finished(top, t, parent, token, at_eos))
            break
        ends = at_eos
        if finisher is not None:  # stop strings need the text: one host sync per step
            stopped = finisher.check(parent.tolist(), token.tolist(), torch.isfinite(top).tolist())
            ends = ends | torch.tensor(stopped, device=device)
        fin.append(_Finished(torch.where(ends & (rank < B), top, neg_inf), t, parent, token, at_eos))
        keep = torch.sort(ends.to(torch.uint8), stable=True).indices[:B]  # the others first, in rank order
        scores = torch.where(ends[keep], neg_inf, top[keep])  # (B,)
        parent, token = parent[keep], token[keep]
        if finisher is not None:
            finisher.commit(keep.tolist())
        hist_tok.append(token)
        hist_parent.append(parent)
        state = reorder_state(state, parent)
        if eos_id is not None:
            eos_seen = eos_seen[parent] + (token == eos_id).long()
        if can_finish_early:
            best_fin = torch.cat([best_fin, length_normalised(fin[-1].raw, t, alpha)])
            best_fin = best_fin.topk(min(n_best, best_fin.numel())).values
            # No live hypothesis can (exact) or does at its length (default) beat the n-th best finished one.
            bound = scores.max() / (horizon if exact else float(t) ** alpha)
            if best_fin.numel() == n_best and bool(bound <= best_fin[-1]):
                break
        logits, state = model.step(token, state)  # (B, V)
    return _best_hypotheses(fin, hist_tok, hist_parent, n_best, alpha)


@dataclass
class _Finished:
    """Finished candidates of one step (-inf where a slot holds none)."""

    raw: torch.Tensor  # (m,) sum of log p
    step: int  # their length
    parent: torch.Tensor  # (m,) live slot after step - 1 that they continue
    token: torch.Tensor  # (m,) their last token
    eos: torch.Tensor  # (m,) bool: ended by <eos>


def _best_hypotheses(
    fin: list[_Finished], hist_tok: list[torch.Tensor], hist_parent: list[torch.Tensor], n_best: int, alpha: float
) -> list[Hypothesis]:
    raw = torch.cat([f.raw for f in fin])
    lengths = torch.cat([torch.full_like(f.raw, f.step) for f in fin])
    norm = length_normalised(raw, lengths, alpha)
    norm = torch.where(torch.isfinite(raw), norm, torch.tensor(float("-inf"), device=norm.device))
    k = min(n_best, int(torch.isfinite(norm).sum()))
    if k == 0:
        return []
    order = norm.topk(k).indices.tolist()
    # a few host transfers, once: back-pointers and the finished candidates
    toks = torch.stack(hist_tok).tolist() if hist_tok else []
    parents = torch.stack(hist_parent).tolist() if hist_parent else []
    parent_l = torch.cat([f.parent for f in fin]).tolist()
    token_l = torch.cat([f.token for f in fin]).tolist()
    eos_l = torch.cat([f.eos for f in fin]).tolist()
    len_l, raw_l, norm_l = lengths.long().tolist(), raw.tolist(), norm.tolist()
    out = []
    for j in order:
        slot, ids = parent_l[j], [token_l[j]]
        for s in range(len_l[j] - 2, -1, -1):  # walk back from the parent, the live slot after step t-1
            ids.append(toks[s][slot])
            slot = parents[s][slot]
        out.append(Hypothesis(ids[::-1], raw_l[j], norm_l[j], eos_l[j]))
    return out
