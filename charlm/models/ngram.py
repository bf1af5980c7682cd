"""Interpolated modified Kneser-Ney n-gram language models (`charlm.models.ngram_estimate` estimates them).

Storage is KenLM's backoff form of the model (what ARPA files hold): for each stored
n-gram its interpolated probability P(g) = p_k(w|c), and for each stored context its
interpolation weight gamma(c) as the back-off weight. Then

    p(w | c) = P(cw) if cw is stored, else gamma(c) p(w | c')     (gamma = 1 for an absent c)

reproduces p_k exactly. Tables, one per order k (sorted int64 keys, ln P, ln gamma):
an n-gram's key is rank(prefix) * V + last token, rank(prefix) being the prefix's
row in the order k-1 table (a unigram's rank is its id).

The model satisfies `charlm.models.LanguageModel`: `init_state`, `forward` (B, T) -> (B, T, V),
`step` (B,) -> (B, V), `token_nll`, plus `token_logprobs` (the scores of given targets without a
(B, T, V) tensor), `sequence_logprobs` (every token scored, the first from the state
alone), `next_logprobs` and `advance`. State: a 1-tuple (hist,) with hist
(1, B, N-1) int64, the last N-1 token ids, -1 where there is no token yet (only -1s:
the start of a stream, where p is p_1). Lookups are vectorised over the batch and
time; tables live on the host, outputs go to the device of the input ids. ARPA files:
`to_arpa`/`from_arpa` (`charlm.models.arpa`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn as nn

from charlm.errors import ConfigError
from charlm.models.arpa import read_arpa, write_arpa
from charlm.models.ngram_estimate import CHUNK_TOKENS, estimate_tables, find
from charlm.models.protocol import LMOutput, State


@dataclass(frozen=True)
class KneserNeyConfig:
    """The shape of a Kneser-Ney model: what the engine asks of `model.config`."""

    kind: ClassVar[str] = "kn"
    state_floats: ClassVar[int] = 0  # its state is token ids
    vocab_size: int
    order: int

    def summary(self) -> str:
        """'Kneser-Ney 5-gram'."""
        return f"Kneser-Ney {self.order}-gram"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> KneserNeyConfig:
        """The options checkpoint.json records: exactly vocab_size and order, positive integers."""
        if not isinstance(d, dict) or set(d) != {"vocab_size", "order"}:
            raise ConfigError("expected vocab_size and order")
        config = cls(**d)
        if not all(isinstance(v, int) and v >= 1 for v in (config.vocab_size, config.order)):
            raise ConfigError("vocab_size and order must be positive integers")
        return config


class KneserNeyModel(nn.Module):
    """An n-gram language model (interpolated modified Kneser-Ney) with the recurrent model's interface."""

    kind = "kn"
    exact_only = True  # its state is its last N-1 tokens: one stream scores as fast as parallel ones, and exactly
    state_floats = 0

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

    def describe(self) -> str:
        return f"KN {self.order}-gram"

    @property
    def num_ngrams(self) -> list[int]:
        """Stored n-grams per order (order 1: the whole vocabulary)."""
        return [len(k) for k in self._keys]

    @classmethod
    def estimate(cls, ids: Any, vocab_size: int, order: int, *, chunk_tokens: int = CHUNK_TOKENS) -> KneserNeyModel:
        """Estimate from a 1-D stream of token ids (array-like or np.memmap of any size): `estimate_tables`."""
        (keys, logp, logbow), discounts = estimate_tables(ids, vocab_size, order, chunk_tokens)
        model = cls(int(vocab_size), keys, logp, logbow)
        model.discounts = discounts
        return model

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

    def warm_state(self, ids: torch.Tensor) -> State:
        """The state after reading ids (B, T) from the empty history."""
        return self.advance(ids)

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
            r[ok] = find(self._keys[m - 1], prev[ok] * self.vocab_size + s[ok])
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
            idx[ok] = find(self._keys[k - 1], c[ok] * self.vocab_size + y[ok])
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
        out = self.forward(ids[:, None], state)
        return cast(torch.Tensor, out.logits)[:, 0], out.state  # (B, V)

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

    def token_nll(self, ids: torch.Tensor, state: State | None, targets: torch.Tensor) -> tuple[torch.Tensor, State]:
        """The NLL of each target (B, T) float64 and the state after ids: minus `token_logprobs`."""
        lp, state = self.token_logprobs(ids, targets, state)
        return -lp, state

    def to_arpa(self, path: str | os.PathLike, token_names: Sequence[str]) -> None:
        """Write the model as an ARPA file (gzip if `path` ends in .gz), atomically: `charlm.models.arpa`."""
        write_arpa(path, token_names, self.vocab_size, (self._keys, self._logp, self._logbow))

    @classmethod
    def from_arpa(cls, path: str | os.PathLike, token_names: Sequence[str]) -> KneserNeyModel:
        """Read an ARPA file (plain or gzip) written by `to_arpa` for this vocabulary (`token_names`)."""
        return cls(len(token_names), *read_arpa(path, token_names))
