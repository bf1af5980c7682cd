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
from charlm.sampling.controls import HistoryControls
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
    controls: HistoryControls | None = None,
) -> list[Hypothesis]:
    """The n best hypotheses (best first) continuing from `state`, whose next-token logits are `logits` (1, V).

    Beams are the batch: scores (B,), state (L, B, H), reordered after each step to
    follow the surviving parents; unused slots hold score -inf (at the start only
    one hypothesis exists). Each step ranks the B x V continuations and takes the
    best 2B: those that end a hypothesis (its `eos_target`-th <eos>, or a stop the
    `finisher` reports) are kept as finished when ranked within the first B; the
    first B of the others live on. At `max_new_tokens` every continuation is complete.
    `banned` ids are never chosen; `exact` selects the early stop (module doc). `controls` (penalties,
    no-repeat n-gram, min_new_tokens, banned strings, the user's processors) reshape each step's logits
    before ranking: the scores and log-probabilities are then those of the adjusted distribution.
    """
    B, V = width, logits.size(-1)
    beam = _Beam(B, V, n_best or width, float(length_penalty), eos_id, eos_target, finisher, logits.device)
    state = reorder_state(state, torch.zeros(B, dtype=torch.long, device=logits.device))  # each (L, B, H)
    logits = logits.expand(B, V)
    horizon = float(max_new_tokens) ** beam.alpha
    for t in range(1, max_new_tokens + 1):
        if controls is None:  # the model's own log-probabilities
            cand = ban(beam.scores[:, None] + F.log_softmax(logits.float(), dim=-1), banned).reshape(-1)  # (B * V,)
        else:  # those of the adjusted distribution (banned ids masked first, as sampling does)
            cand = (beam.scores[:, None] + F.log_softmax(controls(ban(logits.float(), banned)), dim=-1)).reshape(-1)
        if t == max_new_tokens:  # every continuation is complete; same length, so the raw sum ranks them
            beam.finish_all(cand, t)
            break
        parent, token = beam.step(cand, t)
        state = reorder_state(state, parent)
        if controls is not None:
            controls.reorder(parent)
            controls.record(token)
        # No live hypothesis can (exact) or does at its length (default) beat the n-th best finished one.
        if beam.beaten(t, horizon if exact else float(t) ** beam.alpha):
            break
        logits, state = model.step(token, state)  # (B, V)
    return _best_hypotheses(beam.fin, beam.hist_tok, beam.hist_parent, beam.n_best, beam.alpha)


class _Beam:
    """The live hypotheses between steps (their scores and <eos> counts, back-pointers) and the finished ones."""

    def __init__(
        self,
        width: int,
        vocab: int,
        n_best: int,
        alpha: float,
        eos_id: int | None,
        eos_target: int,
        finisher: BeamFinisher | None,
        device: torch.device,
    ) -> None:
        self.width, self.vocab, self.n_best, self.alpha = width, vocab, n_best, alpha
        self.eos_id, self.eos_target, self.finisher = eos_id, eos_target, finisher
        self.neg_inf = torch.tensor(float("-inf"), device=device)
        self.scores = torch.full((width,), float("-inf"), device=device)  # (B,) sum of log p of each live hypothesis
        self.scores[0] = 0.0
        self.eos_seen = torch.zeros(width, dtype=torch.long, device=device)  # (B,) <eos> tokens in each hypothesis
        self.k = min(2 * width, width * vocab)
        self.rank = torch.arange(self.k, device=device)
        self.hist_tok: list[torch.Tensor] = []  # step t-1 -> (B,) last token of each slot
        self.hist_parent: list[torch.Tensor] = []  # step t-1 -> (B,) slot it continued
        self.fin: list[_Finished] = []
        self.best_fin = torch.empty(0, device=device)  # the n best normalised finished scores so far
        if finisher is not None:
            finisher.start(width)

    def _best(self, cand: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The k best continuations, best first: (scores, parent slots, tokens, whether each ends at <eos>)."""
        top, idx = cand.topk(k)
        parent, token = idx // self.vocab, idx % self.vocab
        at_eos = (
            (token == self.eos_id) & (self.eos_seen[parent] == self.eos_target - 1)
            if self.eos_id is not None
            else torch.zeros_like(token, dtype=torch.bool)
        )
        return top, parent, token, at_eos

    def finish_all(self, cand: torch.Tensor, t: int) -> None:
        """The last step: the n best continuations are all finished."""
        top, parent, token, at_eos = self._best(cand, min(self.n_best, self.width * self.vocab))
        self.fin.append(_Finished(top, t, parent, token, at_eos))

    def step(self, cand: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Take the best 2B continuations (B x V `cand`): those that end a hypothesis are finished when ranked
        within the first B, the first B of the others live on. Returns their (parent slots, tokens) (B,)."""
        top, parent, token, at_eos = self._best(cand, self.k)
        ends = at_eos
        if self.finisher is not None:  # stop strings need the text: one host sync per step
            stopped = self.finisher.check(parent.tolist(), token.tolist(), torch.isfinite(top).tolist())
            ends = ends | torch.tensor(stopped, device=top.device)
        finished = torch.where(ends & (self.rank < self.width), top, self.neg_inf)
        self.fin.append(_Finished(finished, t, parent, token, at_eos))
        keep = torch.sort(ends.to(torch.uint8), stable=True).indices[: self.width]  # the others first, in rank order
        self.scores = torch.where(ends[keep], self.neg_inf, top[keep])  # (B,)
        parent, token = parent[keep], token[keep]
        if self.finisher is not None:
            self.finisher.commit(keep.tolist())
        self.hist_tok.append(token)
        self.hist_parent.append(parent)
        if self.eos_id is not None:
            self.eos_seen = self.eos_seen[parent] + (token == self.eos_id).long()
        return parent, token

    def beaten(self, t: int, divisor: float) -> bool:
        """Whether the n-th best finished score is at least the best live sum / `divisor` (the early stop)."""
        if self.eos_id is None and self.finisher is None:  # nothing finishes before the length limit
            return False
        self.best_fin = torch.cat([self.best_fin, length_normalised(self.fin[-1].raw, t, self.alpha)])
        self.best_fin = self.best_fin.topk(min(self.n_best, self.best_fin.numel())).values
        return self.best_fin.numel() == self.n_best and bool(self.scores.max() / divisor <= self.best_fin[-1])


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
