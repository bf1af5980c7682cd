"""Two models mixed: p = (1 - w) p_a + w p_b, scored on a file, and the weight w chosen on a stream."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from charlm.data import Tokenizer, iter_text_chunks
from charlm.errors import CorpusError
from charlm.evaluation.metrics import TextScore
from charlm.evaluation.scoring import CHUNK_BYTES, BlockScorer, block_size, check_vocab, context_id, read_text
from charlm.evaluation.streams import Scoring, stream_logprobs
from charlm.models import LanguageModel, State


class MixtureScorer(BlockScorer):
    """Two models read one stream, each token scored by both and by their linear mixtures
    p = (1 - w) p_a + w p_b for every w of `weights`, in float64 (log-sum-exp of the log-probabilities).
    nll: (2 + W,) summed NLL of a alone, b alone, then each mixture.

    Each model scores a block as `score_stream` does under `scoring` (so its column equals its plain
    figure): a recurrent model in parallel rows (one stream when exact), a Kneser-Ney model as one
    stream; the two per-token vectors of the block are then mixed, with no work per token in Python."""

    def __init__(
        self,
        a: LanguageModel,
        b: LanguageModel,
        context_id: int,
        weights: Iterable[float],
        scoring: Scoring | None = None,
    ) -> None:
        self.scoring = scoring = scoring or Scoring(exact=True)
        super().__init__(context_id, block_size(scoring, a, b))
        self.a, self.b = a, b
        self.device = a.device
        w = torch.tensor(list(weights), dtype=torch.float64, device=self.device)
        if not bool(((w >= 0) & (w <= 1)).all()):
            raise ValueError("mixture weights must lie in [0, 1]")
        self.log_w = torch.stack([torch.log1p(-w), torch.log(w)], dim=1)  # (W, 2): ln(1 - w), ln w
        self.state_a: State | None = None
        self.state_b: State | None = None
        self.nll = np.zeros(2 + len(w))

    def _logprobs(self, model: LanguageModel, ids: np.ndarray, state: State | None) -> tuple[torch.Tensor, State]:
        s = self.scoring
        t = torch.from_numpy(np.ascontiguousarray(ids)).to(model.device)
        lp, state = stream_logprobs(
            model,
            t,
            streams=1 if s.exact else s.streams,
            window=s.window,
            warmup=s.warmup,
            state=state,
            amp_dtype=s.amp_dtype,
        )
        assert state is not None  # a block holds at least one prediction
        return lp.to(self.device), state

    @torch.no_grad()
    def _score(self, ids: np.ndarray) -> None:
        lp_a, self.state_a = self._logprobs(self.a, ids, self.state_a)  # (n,) float64
        lp_b, self.state_b = self._logprobs(self.b, ids, self.state_b)
        sums = [lp_a.sum(), lp_b.sum()]
        for log_w in self.log_w:  # one vector operation per weight; a weight of 0 drops its term
            sums.append(torch.logaddexp(lp_a + log_w[0], lp_b + log_w[1]).sum())
        self.nll -= torch.stack(sums).cpu().numpy()
        self.tokens += lp_a.numel()


def evaluate_file_mixture(
    a: LanguageModel,
    b: LanguageModel,
    tokenizer: Tokenizer,
    path: str | os.PathLike,
    weights: Iterable[float],
    *,
    errors: str = "strict",
    chunk_bytes: int = CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
    **scoring: Any,
) -> list[TextScore]:
    """The figures of a file under a alone, b alone, and each mixture (1 - w) p_a + w p_b, in that order;
    protocol as `evaluate_file`, `scoring` its keywords (default: one exact stream per model)."""
    check_vocab(a, tokenizer)
    check_vocab(b, tokenizer)
    scorer = MixtureScorer(a, b, context_id(tokenizer), weights, Scoring(**{"exact": True, **scoring}))
    chunks = iter_text_chunks(path, chunk_bytes=chunk_bytes, errors=errors)
    nll, _, counts = read_text(scorer, tokenizer, chunks, str(path), progress)
    return [counts(v) for v in nll]


WEIGHT_GRID = np.linspace(0.0, 1.0, 101)


def choose_weight(
    a: LanguageModel,
    b: LanguageModel,
    ids: np.ndarray,
    context: int,
    max_tokens: int | None = None,
    **scoring: Any,
) -> tuple[float, np.ndarray]:
    """The weight w of b in (1 - w) p_a + w p_b that minimises the NLL of the stream `ids` (read after
    `context`; its first `max_tokens` tokens when given), and the mean NLL per token at every weight.
    `scoring`: the keywords of `Scoring` (default: one exact stream per model).

    A grid of steps of 0.01 over [0, 1]: the mixture's log-likelihood is concave in w, so the grid's
    best is within 0.01 of the optimum, and one streaming pass scores all weights at once."""
    scorer = MixtureScorer(a, b, context, WEIGHT_GRID, Scoring(**{"exact": True, **scoring}))
    n = len(ids) if max_tokens is None else min(len(ids), max_tokens)
    for i in range(0, n, 1 << 20):
        scorer.feed(np.asarray(ids[i : min(n, i + (1 << 20))], dtype=np.int64))
    nll, tokens = scorer.finish()
    if tokens == 0:
        raise CorpusError("the validation text holds no tokens to choose a mixture weight on; give the weight")
    losses = nll[2:] / tokens
    return float(WEIGHT_GRID[int(np.argmin(losses))]), losses
