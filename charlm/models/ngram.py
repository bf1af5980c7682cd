"""Interpolated modified Kneser-Ney n-gram language models, estimated in numpy arrays.

A model of order N is estimated from ONE continuous token stream (line ends are
ordinary tokens: `\\n` for char and subword, `<eos>` for word); every k-gram of
the stream is counted for every k <= N. Estimation follows Chen & Goodman (1998)
and KenLM's lmplz:

    a(g)      adjusted count: the raw count c(g) at the highest order N; below it the
              continuation count N1+(. g), the number of distinct tokens seen before g,
              where the start of the stream counts as one more distinct predecessor
              (as KenLM's <s> does), so every seen n-gram has a(g) >= 1.
    D_k(a)    three discounts per order k from the count-of-counts n_r of a at that
              order: Y = n1/(n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2,
              D3+ = 3 - 4Y n4/n3; D(0) = 0. Fallback: when n1, n2 or n3 is 0, or a
              discount falls outside (0, r], the order uses (0.5, 1, 1.5), KenLM's
              --discount_fallback (0 is excluded too: it could make a weight 0).
    p_k(w|c)  = (a(cw) - D_k(a(cw))) / S(c) + gamma(c) p_{k-1}(w|c'),   c' = c without its first token,
              S(c) = sum_w a(cw), gamma(c) = sum_w D_k(a(cw)) / S(c); a context never
              followed by a token (S(c) = 0) has gamma(c) = 1 and p_k = p_{k-1}.
    p_1(w)    = (a(w) - D_1(a(w))) / S + gamma / V,  S = sum_w a(w), gamma = sum_w D_1(a(w)) / S:
              the order-1 rule. The unigram level interpolates with the uniform
              distribution over all V ids, so an id never seen (e.g. <unk>, id 0) gets
              gamma / V > 0. At order N = 1, a(w) = c(w): the discounted unigram
              frequencies plus gamma / V, with no add-one.

Storage is KenLM's backoff form of the same model (what ARPA files hold): for each
stored n-gram its interpolated probability P(g) = p_k(w|c), and for each stored
context its interpolation weight gamma(c) as the back-off weight. Then

    p(w | c) = P(cw) if cw is stored, else gamma(c) p(w | c')     (gamma = 1 for an absent c)

reproduces p_k exactly. Tables, one per order k (sorted int64 keys, ln P, ln gamma):
an n-gram's key is rank(prefix) * V + last token, rank(prefix) being the prefix's
row in the order k-1 table (a unigram's rank is its id). So the continuations of a
context are one contiguous run of keys, and every lookup is a `np.searchsorted`.

The recurrent model's interface: `init_state`, `forward` (B, T) -> (B, T, V),
`step` (B,) -> (B, V), plus `token_logprobs` (the scores of given targets without a
(B, T, V) tensor), `sequence_logprobs` (every token scored, the first from the state
alone), `next_logprobs` and `advance`. State: a 1-tuple (hist,) with hist
(1, B, N-1) int64, the last N-1 token ids, -1 where there is no token yet (only -1s:
the start of a stream, where p is p_1). Lookups are vectorised over the batch and
time; tables live on the host, outputs go to the device of the input ids.

ARPA files (`to_arpa`/`from_arpa`, gzip when the name ends in .gz): log10 P and
log10 gamma with 10 significant digits. KenLM refuses a file without <s> and </s>,
so both are written as unigrams with log10 probability -99 (1e-99: they hold no
mass of charlm's vocabulary, which sums to 1 without them) and backoff 0; they are
never part of a longer n-gram. Token names: see `token_names`. (The `kenlm` pip
package reads orders up to 6; build it with MAX_ORDER=7 or more for longer models.)
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice, repeat
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
import torch.nn as nn

from charlm.errors import CheckpointError, ConfigError, one_line
from charlm.models.protocol import LMOutput, State

CHUNK_TOKENS = 1 << 21  # tokens counted at once: ~5 int64 arrays of this size live besides the tables (~100 MB)
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # D1, D2, D3+ where the closed form fails (KenLM's --discount_fallback)
SENTENCE_MARKER_LOG10 = -99.0  # log10 p of <s> and </s> in an ARPA file
_LN10 = math.log(10.0)
_ARPA_BLOCK = 1 << 18  # n-gram lines formatted or parsed at once
_SORTED_FIND = 1 << 14  # queries at least this many are sorted first: cache-friendly binary searches
_RESERVED = ("<s>", "</s>", "<unk>", "<eos>")


@dataclass(frozen=True)
class KneserNeyConfig:
    """The shape of a Kneser-Ney model: what the engine asks of `model.config`."""

    vocab_size: int
    order: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ sorted-array helpers
def _sort_by_key(q: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted q, pos in the same order) for non-negative int64 q (overwritten) and pos.

    Packing each value with its position into one int64 lets numpy's SIMD `sort`
    replace `argsort` (~5x faster here); an argsort only when they do not fit."""
    bits = max(1, int(pos.max(initial=0)).bit_length())
    if len(q) and int(q.max()) < (1 << (63 - bits)):
        q <<= bits
        q |= pos
        q.sort()
        keys = q >> bits
        q &= (1 << bits) - 1  # in place: one chunk-sized array fewer at the peak
        return keys, q
    order = np.argsort(q)
    return q[order], pos[order]


def _runs(sq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct values, their counts, the index of each element's value) of a sorted array."""
    new = np.empty(len(sq), dtype=bool)
    new[:1] = True
    np.not_equal(sq[1:], sq[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    index = np.cumsum(new, dtype=np.int64)
    index -= 1
    return sq[starts], np.diff(np.append(starts, len(sq))), index


def _argsort(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted q, the order that sorts it) for non-negative int64 q."""
    return _sort_by_key(q.copy(), np.arange(len(q), dtype=np.int64))


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values of two sorted arrays (a stable sort of two runs is a linear merge)."""
    c = np.concatenate([a, b])
    c.sort(kind="stable")
    return _runs(c)[0]


def _find(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row of each query in sorted `keys`, -1 where absent. Many queries into a big table
    are sorted first: random binary searches miss the cache at every level (~10x slower)."""
    if len(keys) == 0:
        return np.full(len(q), -1, dtype=np.int64)
    if len(q) >= _SORTED_FIND and len(keys) >= _SORTED_FIND:
        sq, order = _argsort(q)
        pos = np.empty(len(q), dtype=np.int64)
        pos[order] = np.searchsorted(keys, sq)
    else:
        pos = np.searchsorted(keys, q)
    np.minimum(pos, len(keys) - 1, out=pos)
    return np.where(keys[pos] == q, pos, -1)


# ------------------------------------------------------------------ counting
Tables = list[tuple[np.ndarray, np.ndarray]]  # per order: (sorted keys, counts); order 1: (arange(V), dense counts)


def _chunk_tables(piece: np.ndarray, own: int, vocab: int, order: int) -> Tables:
    """Counts of the k-grams (k <= order) that start in piece[:own]; piece holds order-1 tokens more.

    Each order is sorted once, and the positions travel with the keys (packed into the
    same int64), so the next order's keys (rank of the k-gram here, next token) are built
    in this sorted order: no scatter back to stream order, only a gather from `piece`."""
    tables = [(np.arange(vocab, dtype=np.int64), np.bincount(piece[:own], minlength=vocab))]
    pos = np.arange(own, dtype=np.int64)  # start of each k-gram, in the current sorted order
    rank = piece[:own].astype(np.int64)  # row of the (k-1)-gram at pos in its table (order 1: the id)
    for k in range(2, order + 1):
        if own + k - 1 > len(piece):  # the stream's last chunk: drop the k-grams that would end past it
            fits = pos + k - 1 < len(piece)
            pos, rank = pos[fits], rank[fits]
        rank *= vocab
        rank += piece[pos + (k - 1)]  # (m,) the k-grams' keys
        keys, pos = _sort_by_key(rank, pos)
        keys, counts, rank = _runs(keys)
        tables.append((keys, counts))
    return tables


def _rekey(keys: np.ndarray, prefix_map: np.ndarray | None, vocab: int) -> np.ndarray:
    """Keys with prefix ranks moved to a merged table's ranks (a monotone map: stays sorted)."""
    return keys if prefix_map is None else prefix_map[keys // vocab] * vocab + keys % vocab


def _merge_tables(a: Tables, b: Tables, vocab: int) -> Tables:
    """Add two count tables: merge order by order, re-ranking each order's prefixes."""
    out = [(a[0][0], a[0][1] + b[0][1])]
    map_a = map_b = None
    for (ka, ca), (kb, cb) in zip(a[1:], b[1:]):
        ka, kb = _rekey(ka, map_a, vocab), _rekey(kb, map_b, vocab)
        keys = _union(ka, kb)
        map_a, map_b = np.searchsorted(keys, ka), np.searchsorted(keys, kb)
        counts = np.zeros(len(keys), dtype=np.int64)
        counts[map_a] = ca
        counts[map_b] += cb
        out.append((keys, counts))
    return out


def count_ngrams(ids: Any, vocab_size: int, order: int, chunk_tokens: int = CHUNK_TOKENS) -> Tables:
    """Count every k-gram (k <= order) of the stream `ids` (any 1-D integer array-like,
    e.g. an np.memmap), `chunk_tokens` at a time with order-1 tokens of overlap.
    Memory is bounded by the distinct n-grams plus one chunk, not by the stream."""
    n = len(ids)
    total: Tables | None = None
    for start in range(0, n, chunk_tokens):
        piece = np.asarray(ids[start : start + chunk_tokens + order - 1])
        if piece.dtype.kind not in "iu":
            raise ConfigError(f"token ids must be integers, got {piece.dtype}; pass encoded ids")
        if piece.min() < 0 or piece.max() >= vocab_size:
            bad = piece[(piece < 0) | (piece >= vocab_size)][0]
            raise ConfigError(f"token id {bad} is outside the vocabulary of {vocab_size} ids; use the same tokenizer")
        chunk = _chunk_tables(piece, min(chunk_tokens, n - start), vocab_size, order)
        total = chunk if total is None else _merge_tables(total, chunk, vocab_size)
    assert total is not None
    return total


# ------------------------------------------------------------------ smoothing
def kn_discounts(adjusted: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] of one order from its adjusted counts (Chen & Goodman eq. 26), or the fallback."""
    n1, n2, n3, n4 = np.bincount(np.minimum(adjusted, 5), minlength=6)[1:5].astype(np.float64)
    if n1 > 0 and n2 > 0 and n3 > 0:
        y = n1 / (n1 + 2.0 * n2)
        d = np.array([1.0 - 2.0 * y * n2 / n1, 2.0 - 3.0 * y * n3 / n2, 3.0 - 4.0 * y * n4 / n3])
        if np.all((d > 0.0) & (d <= np.array([1.0, 2.0, 3.0]))):
            return np.concatenate([[0.0], d])
    return np.array([0.0, *FALLBACK_DISCOUNTS])


def _suffix_rows(keys: list[np.ndarray], vocab: int) -> list[np.ndarray]:
    """Per order k >= 2: the row, in the order k-1 table, of each k-gram's suffix (its last k-1 tokens)."""
    suffix = [np.zeros(0, np.int64)]
    for i in range(1, len(keys)):
        last = keys[i] % vocab
        if i == 1:
            suffix.append(last)
        else:  # suffix(g) = suffix(prefix(g)) extended by g's last token
            suffix.append(_find(keys[i - 1], suffix[i - 1][keys[i] // vocab] * vocab + last))
    return suffix


def _row_of(keys: list[np.ndarray], tokens: np.ndarray, vocab: int) -> int:
    """Row of one n-gram (its tokens) in the table of its order, -1 if absent."""
    row = int(tokens[0])
    for i in range(1, len(tokens)):
        if row < 0:
            return -1
        row = int(_find(keys[i], np.array([row * vocab + int(tokens[i])]))[0])
    return row


def _adjusted_counts(tables: Tables, suffix: list[np.ndarray], head: np.ndarray, vocab: int) -> list[np.ndarray]:
    """Raw counts at the highest order, continuation counts N1+(. g) below (+1 at the stream's start)."""
    keys = [k for k, _ in tables]
    adjusted = [c for _, c in tables]
    for i in range(len(tables) - 1):
        adjusted[i] = np.bincount(suffix[i + 1], minlength=len(keys[i]))
        if len(head) > i:
            adjusted[i][_row_of(keys, head[: i + 1], vocab)] += 1
    return adjusted


def _interpolate(
    keys: list[np.ndarray], adjusted: list[np.ndarray], suffix: list[np.ndarray], vocab: int
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """ln P and ln gamma per order (the backoff form of the module doc), and the discounts (N, 4)."""
    discounts = np.stack([kn_discounts(a) for a in adjusted])
    d = discounts[0][np.minimum(adjusted[0], 3)]  # (V,)
    total = adjusted[0].sum()
    p = (adjusted[0] - d) / total + d.sum() / total / vocab  # (V,) the order-1 rule
    logp, logbow = [np.log(p)], []
    for i in range(1, len(keys)):
        a, prefix = adjusted[i], keys[i] // vocab
        d = discounts[i][np.minimum(a, 3)]
        mass = np.bincount(prefix, weights=a, minlength=len(keys[i - 1]))  # S(c) per context
        gamma = np.ones(len(keys[i - 1]))
        seen = mass > 0
        gamma[seen] = np.bincount(prefix, weights=d, minlength=len(keys[i - 1]))[seen] / mass[seen]
        p = (a - d) / mass[prefix] + gamma[prefix] * p[suffix[i]]
        logp.append(np.log(p))
        logbow.append(np.log(gamma))
    logbow.append(np.zeros(len(keys[-1])))  # highest-order n-grams are never contexts
    return logp, logbow, discounts


# ------------------------------------------------------------------ the model
class KneserNeyModel(nn.Module):
    """An n-gram language model (interpolated modified Kneser-Ney) with the recurrent model's interface."""

    def __init__(
        self, vocab_size: int, keys: list[np.ndarray], logp: list[np.ndarray], logbow: list[np.ndarray]
    ) -> None:
        super().__init__()
        self.vocab_size, self.order = int(vocab_size), len(keys)
        self.config = KneserNeyConfig(self.vocab_size, self.order)
        self.discounts: np.ndarray | None = None  # (N, 4): [0, D1, D2, D3+] per order, when estimated
        self._keys, self._logp, self._logbow = keys, logp, logbow
        # where each context's continuations start in the next order's table: row r's are [off[r], off[r+1])
        self._children = [
            np.searchsorted(keys[i + 1], np.arange(len(keys[i]) + 1, dtype=np.int64) * self.vocab_size)
            for i in range(self.order - 1)
        ]
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # follows .to(device)
        self.train(False)

    @property
    def device(self) -> torch.device:
        return cast(torch.Tensor, self._anchor).device

    @property
    def num_ngrams(self) -> list[int]:
        """Stored n-grams per order (order 1: the whole vocabulary)."""
        return [len(k) for k in self._keys]

    @classmethod
    def estimate(cls, ids: Any, vocab_size: int, order: int, *, chunk_tokens: int = CHUNK_TOKENS) -> KneserNeyModel:
        """Estimate from a 1-D stream of token ids (array-like or np.memmap of any size), see the module doc."""
        if not isinstance(order, (int, np.integer)) or order < 1:
            raise ConfigError(f"order must be an integer of at least 1, got {order!r}")
        # keys are rank * V + id < 2^31 * V: int64 for any table that fits in memory
        if not isinstance(vocab_size, (int, np.integer)) or not 1 <= vocab_size < 1 << 31:
            raise ConfigError(f"vocab size must be an integer in [1, 2^31), got {vocab_size!r}")
        order, vocab_size = int(order), int(vocab_size)
        if np.ndim(ids) != 1 or len(ids) == 0:
            raise ConfigError("a Kneser-Ney model needs a non-empty 1-D stream of token ids; pass some training text")
        if chunk_tokens < 1:
            raise ConfigError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
        tables = count_ngrams(ids, vocab_size, order, chunk_tokens)
        keys = [k for k, _ in tables]
        suffix = _suffix_rows(keys, vocab_size)
        adjusted = _adjusted_counts(tables, suffix, np.asarray(ids[: order - 1]).astype(np.int64), vocab_size)
        del tables
        logp, logbow, discounts = _interpolate(keys, adjusted, suffix, vocab_size)
        model = cls(vocab_size, keys, logp, logbow)
        model.discounts = discounts
        return model

    # ----------------------------------------------------------------- state
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The empty history (start of a stream) for `batch_size` sequences: ((1, B, N-1) of -1,)."""
        return (torch.full((1, batch_size, self.order - 1), -1, dtype=torch.long, device=device or self.device),)

    def _stream(self, ids: torch.Tensor | None, state: State | None, batch: int = 1) -> np.ndarray:
        """[-1 | history | ids]: (B, N+T) int64 on the host, -1 where there is no token.

        Column j+1 ends the context of the token after column j; the leading -1 is
        the (empty) context before the history's first token."""
        x = np.zeros((batch, 0), np.int64) if ids is None else ids.detach().cpu().numpy().astype(np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {x.min()}..{x.max()}")
        B = x.shape[0]
        hist = np.full((B, self.order - 1), -1, np.int64) if state is None else state[0][0].cpu().numpy()
        return np.concatenate([np.full((B, 1), -1, np.int64), hist.astype(np.int64), x], axis=1)  # (B, N+T)

    def _state_after(self, s: np.ndarray, device: torch.device) -> State:
        hist = np.ascontiguousarray(s[:, s.shape[1] - (self.order - 1) :])  # (B, N-1)
        return (torch.from_numpy(hist)[None].to(device),)  # (1, B, N-1)

    def advance(self, ids: torch.Tensor, state: State | None = None) -> State:
        """The state after reading ids (B, T): a history update only."""
        return self._state_after(self._stream(ids, state), ids.device)

    # ----------------------------------------------------------------- lookups
    def _contexts(self, s: np.ndarray, start: int, length: int) -> list[np.ndarray]:
        """Per length m = 1..N-1: the table row of the m-gram ending at columns start..start+length-1
        of s (B, L), flat (B*length,), -1 where absent.

        The m-gram ending at j is the (m-1)-gram ending at j-1 extended by s[j]:
        one lookup per position and order, never a walk per n-gram."""
        rows = [s]  # a unigram's row is its id; -1 stays -1
        for m in range(2, self.order):
            prev = np.full_like(s, -1)
            prev[:, 1:] = rows[-1][:, :-1]  # (B, L) the (m-1)-gram ending one column earlier
            ok = (prev >= 0) & (s >= 0)
            r = np.full_like(s, -1)
            r[ok] = _find(self._keys[m - 1], prev[ok] * self.vocab_size + s[ok])
            rows.append(r)
        return [r[:, start : start + length].reshape(-1) for r in rows]

    def _score(self, ctx: list[np.ndarray], y: np.ndarray) -> np.ndarray:
        """ln p(y | context) for flat rows: ctx[m-1] (R,) rows of the length-m contexts, y (R,) -> (R,)."""
        lp = self._logp[0][y]  # (R,)
        for k in range(2, self.order + 1):
            c = ctx[k - 2]
            ok = c >= 0  # an absent context backs off with weight 1, and no longer n-gram holds it
            if not ok.any():
                continue
            idx = np.full_like(y, -1)
            idx[ok] = _find(self._keys[k - 1], c[ok] * self.vocab_size + y[ok])
            bow = np.where(ok, self._logbow[k - 2][np.maximum(c, 0)], 0.0)
            seen = self._logp[k - 1][np.maximum(idx, 0)] if len(self._keys[k - 1]) else bow
            lp = np.where(idx >= 0, seen, lp + bow)
        return lp

    def _dense(self, ctx: list[np.ndarray]) -> np.ndarray:
        """ln p(. | context) over the whole vocabulary: ctx[m-1] (R,) -> (R, V) float64."""
        out = np.repeat(self._logp[0][None, :], len(ctx[0]), axis=0)  # (R, V) the unigram distribution
        for k in range(2, self.order + 1):
            c = ctx[k - 2]
            rows = np.flatnonzero(c >= 0)
            c = c[rows]
            out[rows] += self._logbow[k - 2][c][:, None]  # back off everywhere, ...
            lo, hi = self._children[k - 2][c], self._children[k - 2][c + 1]
            n = hi - lo
            at = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n - lo, n)  # table rows of all continuations, flat
            words = self._keys[k - 1][at] % self.vocab_size
            out[np.repeat(rows, n), words] = self._logp[k - 1][at]  # ... except where the n-gram is stored
        return out

    # ----------------------------------------------------------------- the engine's interface
    @torch.no_grad()
    def forward(self, ids: torch.Tensor, state: State | None = None) -> LMOutput:
        """ids (B, T) int64 -> `LMOutput`: next-token log-probabilities (B, T, V) float32, the state after ids.

        An estimated model has no loss to train and no activations: those fields are None.
        """
        s = self._stream(ids, state)  # (B, N+T)
        B, T = ids.shape
        logits = self._dense(self._contexts(s, self.order, T)).reshape(B, T, self.vocab_size)  # (B, T, V)
        return LMOutput(
            torch.from_numpy(logits.astype(np.float32)).to(ids.device), None, self._state_after(s, ids.device)
        )

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One token per row: ids (B,) -> log-probabilities (B, V) float32 and the new state."""
        out = self.forward(ids[:, None], state)  # (B, 1, V)
        return out.logits[:, 0], out.state

    @torch.no_grad()
    def next_logprobs(self, state: State) -> torch.Tensor:
        """Log-probabilities (B, V) float32 of the next token after the state's history alone
        (after init_state: the start of a stream, p_1)."""
        s = self._stream(None, state, state[0].size(1))  # (B, N)
        logits = self._dense(self._contexts(s, self.order - 1, 1))  # (B, V)
        return torch.from_numpy(logits.astype(np.float32)).to(state[0].device)

    @torch.no_grad()
    def token_logprobs(
        self, x: torch.Tensor, y: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """ln p(y[b, t] | history, x[b, :t+1]) (B, T) float64 and the state after x, without a (B, T, V) tensor."""
        s = self._stream(x, state)  # (B, N+T)
        target = y.detach().cpu().numpy().astype(np.int64).reshape(-1)  # (B*T,)
        lp = self._score(self._contexts(s, self.order, x.size(1)), target).reshape(x.shape)  # (B, T)
        return torch.from_numpy(lp).to(x.device), self._state_after(s, x.device)

    @torch.no_grad()
    def sequence_logprobs(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ln p(ids[b, t] | history, ids[b, :t]) (B, T) float64, the first token scored from the
        history alone (KenLM's full_scores with bos=False from the empty state), and the state after ids."""
        s = self._stream(ids, state)  # (B, N+T)
        target = ids.detach().cpu().numpy().astype(np.int64).reshape(-1)  # (B*T,)
        lp = self._score(self._contexts(s, self.order - 1, ids.size(1)), target).reshape(ids.shape)  # (B, T)
        return torch.from_numpy(lp).to(ids.device), self._state_after(s, ids.device)

    # ----------------------------------------------------------------- ARPA
    def _ngram_tokens(self, i: int, rows: np.ndarray) -> np.ndarray:
        """Token ids of rows of the order i+1 table: (n,) -> (n, i+1)."""
        cols = []
        for j in range(i, 0, -1):
            key = self._keys[j][rows]
            cols.append(key % self.vocab_size)
            rows = key // self.vocab_size
        cols.append(rows)
        return np.stack(cols[::-1], axis=1)

    def _arpa_lines(self, i: int, names: np.ndarray) -> Iterator[str]:
        """The lines of the \\{i+1}-grams: section, a block at a time."""
        n, last = len(self._keys[i]), i == self.order - 1
        for start in range(0, n, _ARPA_BLOCK):
            rows = np.arange(start, min(n, start + _ARPA_BLOCK))
            tokens = self._ngram_tokens(i, rows)  # (b, i+1)
            words = names[tokens[:, 0]]
            for j in range(1, i + 1):
                words = np.strings.add(np.strings.add(words, " "), names[tokens[:, j]])
            probs = (self._logp[i][rows] / _LN10).tolist()
            if last:
                yield "".join([f"{p:.10g}\t{w}\n" for p, w in zip(probs, words.tolist())])
            else:
                bows = (self._logbow[i][rows] / _LN10).tolist()
                yield "".join([f"{p:.10g}\t{w}\t{b:.10g}\n" for p, w, b in zip(probs, words.tolist(), bows)])

    def to_arpa(self, path: str | os.PathLike, token_names: Sequence[str]) -> None:
        """Write the model as an ARPA file (gzip if `path` ends in .gz), atomically; see the module doc."""
        names = np.array(_check_names(token_names, self.vocab_size), dtype=np.dtypes.StringDType())
        path = Path(path)
        counts = [len(k) for k in self._keys]
        counts[0] += 2  # <s> and </s>
        bow = "" if self.order == 1 else "\t0"
        markers = "".join(f"{SENTENCE_MARKER_LOG10:g}\t{m}{bow}\n" for m in ("<s>", "</s>"))
        try:
            with _atomic_binary(path) as f:
                f.write(("\\data\\\n" + "".join(f"ngram {k}={c}\n" for k, c in enumerate(counts, 1))).encode())
                for i in range(self.order):
                    f.write(f"\n\\{i + 1}-grams:\n".encode())
                    for block in self._arpa_lines(i, names):
                        f.write(block.encode("utf-8"))
                    if i == 0:
                        f.write(markers.encode())
                f.write(b"\n\\end\\\n")
        except OSError as exc:
            raise CheckpointError(f"cannot write {path}: {exc.strerror}; check its directory") from None

    @classmethod
    def from_arpa(cls, path: str | os.PathLike, token_names: Sequence[str]) -> KneserNeyModel:
        """Read an ARPA file (plain or gzip) written by `to_arpa` for this vocabulary."""
        names = list(token_names)
        if len(set(names)) != len(names):
            raise ConfigError("token names must be unique; use charlm.models.ngram.token_names(tokenizer)")
        try:
            with _open_arpa(Path(path)) as f:
                sections = _read_arpa(f, names)
            return cls._from_ngrams(len(names), sections, names)
        except _ArpaError as exc:
            raise CheckpointError(f"{path} is not a usable ARPA model: {exc}; re-export it or pick another") from None
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise CheckpointError(f"cannot read {path}: {one_line(what)}; check the file") from None

    @classmethod
    def _from_ngrams(cls, vocab: int, sections: list[tuple[np.ndarray, ...]], names: list[str]) -> KneserNeyModel:
        """Tables from parsed sections (tokens (n, k), log10 P, log10 gamma) per order."""
        tokens, lp, bo = sections[0]
        ids = tokens[:, 0]
        if len(np.unique(ids)) != len(ids) or len(ids) != vocab:
            missing = np.setdiff1d(np.arange(vocab), ids)
            what = f"no unigram for {names[missing[0]]!r}" if len(missing) else "a repeated unigram"
            raise _ArpaError(f"{what} (every token of the vocabulary needs exactly one)")
        keys, logp, logbow = [np.arange(vocab, dtype=np.int64)], [np.empty(vocab)], [np.empty(vocab)]
        logp[0][ids], logbow[0][ids] = lp * _LN10, bo * _LN10
        for k, (tokens, lp, bo) in enumerate(sections[1:], 2):
            prefix = tokens[:, 0]
            for j in range(1, k - 1):
                prefix = np.where(prefix >= 0, _find(keys[j], prefix * vocab + tokens[:, j]), -1)
            if (prefix < 0).any():
                bad = " ".join(names[t] for t in tokens[np.flatnonzero(prefix < 0)[0]])
                raise _ArpaError(f"the {k}-gram '{bad}' has no stored {k - 1}-gram prefix")
            key = prefix * vocab + tokens[:, -1]
            order = np.argsort(key, kind="stable")
            key = key[order]
            if (key[1:] == key[:-1]).any():
                raise _ArpaError(f"a {k}-gram is listed twice")
            keys.append(key)
            logp.append(lp[order] * _LN10)
            logbow.append(bo[order] * _LN10)
        return cls(vocab, keys, logp, logbow)


# ------------------------------------------------------------------ ARPA reading and writing
class _ArpaError(Exception):
    """A problem with an ARPA file's content (becomes a CheckpointError naming the file)."""


@contextlib.contextmanager
def _atomic_binary(path: Path) -> Iterator[IO[bytes]]:
    """A file written to a temp name in the same directory and renamed on success, gzip for .gz:
    a reader sees the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
                    yield gz  # type: ignore[misc]
            else:
                yield raw
            raw.flush()
            os.fsync(raw.fileno())
        umask = os.umask(0)  # read the umask, so the file gets open()'s permissions, not mkstemp's 0600
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def _open_arpa(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed when it starts with gzip's magic number (whatever its name)."""
    with open(path, "rb") as raw:
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        else:
            raw.seek(0)
            yield raw


def _content_line(f: IO[bytes], comments: bool = False) -> bytes | None:
    """The next line that is not blank (nor a '#' comment, if allowed), stripped; None at the end."""
    for line in f:
        line = line.strip()
        if line and not (comments and line.startswith(b"#")):
            return line
    return None


def _read_counts(f: IO[bytes]) -> list[int]:
    """The \\data\\ header: the number of n-grams of each order 1..N."""
    if _content_line(f, comments=True) != b"\\data\\":
        raise _ArpaError("it does not start with \\data\\")
    counts: list[int] = []
    for line in f:
        line = line.strip()
        if not line:
            break
        head, _, n = line.partition(b"=")
        if head != b"ngram %d" % (len(counts) + 1) or not n.isdigit():
            raise _ArpaError(f"bad count line {_show(line)} in the \\data\\ header")
        counts.append(int(n))
    if not counts:
        raise _ArpaError("the \\data\\ header lists no n-gram counts")
    return counts


_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[list(b" \t\n\r\x0b\x0c")] = True  # the bytes that bytes.split() splits on


def _parse_lines(lines: list[bytes], k: int, lookup: dict[bytes, int]) -> tuple[np.ndarray, ...]:
    """ARPA n-gram lines of order k -> tokens (n, k) (-1: unknown, -2: <s> or </s>), log10 P, log10 gamma."""
    blob = b"".join(lines)
    byte = np.frombuffer(blob, dtype=np.uint8)
    space = _IS_SPACE[byte]
    starts = ~space & np.concatenate([[True], space[:-1]])  # the first byte of every field
    newline = byte == 10
    fields = np.bincount((np.cumsum(newline) - newline)[starts], minlength=len(lines))  # per line
    bad = np.flatnonzero((fields != k + 1) & (fields != k + 2))
    if len(bad):
        raise _ArpaError(f"a {k}-gram line has {fields[bad[0]]} fields, not {k + 1} or {k + 2}: {_show(lines[bad[0]])}")
    flat = np.array(blob.split(), dtype=object)
    first = np.cumsum(fields) - fields  # (n,) the probability field of each line
    words = [flat[first + j] for j in range(1, k + 1)]
    tokens = np.stack([_token_ids(w, lookup) for w in words], axis=1)  # (n, k)
    unknown = np.argwhere(tokens == -1 if k == 1 else tokens < 0)  # <s> and </s> stand alone only
    if len(unknown):
        r, j = unknown[0]
        raise _ArpaError(f"the {k}-gram {_show(lines[r])} uses {_show(words[j][r])}, not a token of this vocabulary")
    backoff = np.zeros(len(lines))
    has = fields == k + 2
    backoff[has] = _floats(flat[first[has] + k + 1])
    return tokens, _floats(flat[first]), backoff


def _token_ids(names: np.ndarray, lookup: dict[bytes, int]) -> np.ndarray:
    return np.fromiter(map(lookup.get, names, repeat(-1)), dtype=np.int64, count=len(names))


def _floats(fields: np.ndarray) -> np.ndarray:
    try:
        x = fields.astype(np.float64)
    except (ValueError, TypeError):
        x = np.array([np.nan])
    if not np.isfinite(x).all():
        bad = next(f for f in fields if not _is_finite_number(f))
        raise _ArpaError(f"{_show(bad)} is not a finite log10 probability or backoff")
    return x


def _is_finite_number(field: bytes) -> bool:
    try:
        return math.isfinite(float(field))
    except ValueError:
        return False


def _read_section(f: IO[bytes], k: int, count: int, lookup: dict[bytes, int]) -> tuple[np.ndarray, ...]:
    """The \\k-grams: section of `count` lines -> tokens (n, k), log10 P, log10 gamma."""
    if _content_line(f) != b"\\%d-grams:" % k:
        raise _ArpaError(f"the \\{k}-grams: section is missing (the file may be truncated)")
    parts = []
    for start in range(0, count, _ARPA_BLOCK):
        lines = list(islice(f, min(_ARPA_BLOCK, count - start)))
        if len(lines) < min(_ARPA_BLOCK, count - start) or not lines[-1].endswith(b"\n"):
            raise _ArpaError(f"the \\{k}-grams: section ends before its {count} lines (truncated?)")
        parts.append(_parse_lines(lines, k, lookup))
    tokens, logp, backoff = (np.concatenate(p) for p in zip(*parts)) if parts else _empty_section(k)
    keep = tokens[:, 0] != -2  # <s> and </s> are written for KenLM only
    return tokens[keep], logp[keep], backoff[keep]


def _empty_section(k: int) -> tuple[np.ndarray, ...]:
    return np.zeros((0, k), np.int64), np.zeros(0), np.zeros(0)


def _read_arpa(f: IO[bytes], names: list[str]) -> list[tuple[np.ndarray, ...]]:
    """All sections of an ARPA file: per order (tokens (n, k), log10 P, log10 gamma)."""
    lookup = {n.encode("utf-8"): i for i, n in enumerate(names)}
    lookup[b"<s>"] = lookup[b"</s>"] = -2
    counts = _read_counts(f)
    sections = [_read_section(f, k, n, lookup) for k, n in enumerate(counts, 1)]
    if _content_line(f) != b"\\end\\":
        raise _ArpaError("\\end\\ is missing after the last section (truncated?)")
    return sections


def _show(line: bytes) -> str:
    text = line.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= 60 else text[:57] + "...")


# ------------------------------------------------------------------ token names
def _unsafe(c: str) -> bool:
    """A character that cannot be part of an ARPA word: whitespace, controls, format and other
    invisible characters, separators, surrogates, unassigned code points."""
    return c.isspace() or unicodedata.category(c)[0] in "CZ"


def _escape(surface: str) -> str:
    # '<' is escaped too where it could make the name look like a generated one, so names stay unique
    lt = "<U+" in surface or "<id:" in surface or surface in _RESERVED
    return "".join(f"<U+{ord(c):04X}>" if _unsafe(c) or (lt and c == "<") else c for c in surface)


def token_names(tokenizer: Any) -> list[str]:
    """ARPA-safe, unique names for every id of a charlm tokenizer (the words of its ARPA files).

    - the unknown id (0) is `<unk>`; the word tokenizer's line end (id 1) is `<eos>`;
    - any other id is its surface `tokenizer.decode([i])` with every whitespace, control,
      format, separator, surrogate or unassigned character written `<U+XXXX>` (hex code
      point, e.g. "\\n" -> `<U+000A>`, " the" -> `<U+0020>the`); a '<' is written
      `<U+003C>` too when the surface contains "<U+" or "<id:" or is one of <s>, </s>,
      <unk>, <eos>, so no surface can pose as an escape or a special token;
    - an id whose surface is empty or equal to an earlier id's (a byte-fallback piece
      and the character it spells, byte pieces of partial characters that all decode
      to U+FFFD) is `<id:N>`, N its id.
    The names are therefore distinct: {name: id} inverts the list.
    """
    eos = getattr(tokenizer, "eos_id", None)
    names: list[str] = []
    seen: set[str] = set()
    for i in range(tokenizer.vocab_size):
        if i == tokenizer.unk_id:
            name = "<unk>"
        elif i == eos:
            name = "<eos>"
        else:
            name = _escape(tokenizer.decode([i]))
            if not name or name in seen:
                name = f"<id:{i}>"
        seen.add(name)
        names.append(name)
    return names


def _check_names(token_names: Sequence[str], vocab: int) -> list[str]:
    names = list(token_names)
    hint = "use charlm.models.ngram.token_names(tokenizer)"
    if len(names) != vocab:
        raise ConfigError(f"{len(names)} token names for a vocabulary of {vocab} ids; {hint}")
    for name in names:
        if not isinstance(name, str) or not name or any(map(_unsafe, name)) or name in ("<s>", "</s>"):
            raise ConfigError(f"token name {name!r} cannot be an ARPA word (empty, blank, control, <s>); {hint}")
    if len(set(names)) != len(names):
        raise ConfigError(f"token names are not unique; {hint}")
    return names
