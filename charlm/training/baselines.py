"""What a recurrent run must beat, and the guards that say when it does not.

At the start of a run, two baselines of the same training ids are scored on the run's
validation ids by `charlm.evaluation.scoring.evaluate_ids`, so they follow validation's own rules
(the line end read before the first token, <unk> scored as <unk>, --eval-tokens'
evenly spread segments):

- the unigram model: add-one smoothed counts of the training ids, the distribution the
  output layer starts from (`RNNLanguageModel.init_output_bias`). A network still at
  this figure has learnt nothing about context.
- a Kneser-Ney n-gram model of the level's default order, the figure `charlm train
  --model kn` reports for the same text; it takes seconds, so a network that ends
  above it was not worth its budget.

During the run, `not_learning` and `overfit_verdict` decide when a validation says
something the user should hear. Both are pure functions of the figures, so tests
drive them with lists of losses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from charlm.models import KneserNeyModel
from charlm.training.config import TrainConfig

if TYPE_CHECKING:
    from charlm.training.prepare import PreparedData

# Kneser-Ney is estimated only from a training text of at most this many tokens. Measured
# here (a busy 2-core EPYC): 0.23-0.29 s per million tokens for a char 7-gram (1-6M
# tokens), 0.3-0.5 s per million for a word 5-gram (0.2-1.3M, growing with the text):
# 5M tokens cost 1.5-3 s, a few seconds of a budget of minutes. Above it the run says so.
KN_MAX_TOKENS = 5_000_000

# Not learning: validation within this many nats of the unigram's (or above it), judged only
# after this share of the run and this many validations, so the warm-up's first validations,
# still near the unigram start, do not raise it.
UNIGRAM_MARGIN = 0.02
NOT_LEARNING_PROGRESS = 0.25
NOT_LEARNING_EVALS = 2

# Overfitting: this many validations since the best, the latest this far above it (relative, in nats).
# "Rose N times in a row" was too brittle: a 58k-word run went from its best (ppl 127.0 at step 1,000)
# to 157-172 over 16 validations while noise kept breaking every run of rises (benchmarks/results_matrix.md).
# Three validations past the best and 3% above are past noise (a steady run's figure moves by ~0.5%); eight
# (2,000 steps by default) and 5% above mean the rest of the budget would go on memorising, so the run
# stops, unless the user chose --patience.
OVERFIT_NOTICE_STALE = 3
OVERFIT_NOTICE_GAP = 0.03
OVERFIT_STOP_STALE = 8
OVERFIT_STOP_GAP = 0.05


def unigram_model(counts: np.ndarray) -> KneserNeyModel:
    """The add-one unigram model of token counts (V,) as a one-order back-off table.

    p(w) = (c(w) + 1) / (N + V) whatever came before: in the n-gram engine's form, so
    `evaluate_ids` scores it exactly as it scores any model, under the same rules."""
    c = np.asarray(counts, dtype=np.float64) + 1.0
    vocab = len(c)
    logp = np.log(c / c.sum())
    return KneserNeyModel(vocab, [np.arange(vocab, dtype=np.int64)], [logp], [np.zeros(vocab)])


def _figures(score: Any) -> dict[str, float]:
    return {"loss": score.loss, "ppl": math.exp(min(score.loss, 700.0)), "bpc": score.bits_per_char}


def compute(data: PreparedData, config: TrainConfig, kn_max_tokens: int = KN_MAX_TOKENS) -> dict[str, Any]:
    """Score the unigram and Kneser-Ney baselines of the run's training ids on its validation ids.

    Returns a JSON-ready record (kept in the run's trainer state, so a resume shows it
    again): "unigram" and "kn" figures (loss, ppl, bpc), the KN order, "kn_skipped" (why
    there is no KN figure, or None), the tokens scored and the seconds it took.
    """
    t0 = time.perf_counter()
    tok = data.tokenizer
    order = config.ngram_order

    def score(model: KneserNeyModel) -> Any:
        return data.score_validation(model, config.run.eval_tokens)

    unigram = score(unigram_model(data.unigram_counts()))
    kn: dict[str, float] | None = None
    skipped = None
    if len(data.train_ids) <= kn_max_tokens:
        kn = _figures(score(KneserNeyModel.estimate(data.train_ids, tok.vocab_size, order)))
    else:
        skipped = (
            f"text too large ({len(data.train_ids):,} training tokens, above {kn_max_tokens:,}); "
            "charlm train --model kn estimates it"
        )
    return {
        "unigram": _figures(unigram),
        "kn": kn,
        "kn_order": order,
        "kn_skipped": skipped,
        "tokens": unigram.tokens,
        "seconds": round(time.perf_counter() - t0, 3),
        "valid_fingerprint": data.valid_fingerprint,
    }


def not_learning(loss: float, unigram: float, progress: float, evals: int) -> bool:
    """True when, a fair share into the run, validation is no better than the unigram model's."""
    return progress >= NOT_LEARNING_PROGRESS and evals >= NOT_LEARNING_EVALS and loss > unigram - UNIGRAM_MARGIN


def overfit_verdict(stale: int, loss: float, best: float, stop_allowed: bool = True) -> str | None:
    """The verdict on a validation `loss` `stale` validations after the best one (`best`, the lowest so far):
    "stop", "notice" or None."""
    gap = loss / best - 1.0 if best > 0 else 0.0
    if stop_allowed and stale >= OVERFIT_STOP_STALE and gap >= OVERFIT_STOP_GAP:
        return "stop"
    if stale >= OVERFIT_NOTICE_STALE and gap >= OVERFIT_NOTICE_GAP:
        return "notice"
    return None


def overfit_verdicts(losses: Sequence[float], stop_allowed: bool = True) -> list[str | None]:
    """The verdict after each validation of a sequence, as a run reaches them one at a time."""
    out: list[str | None] = []
    stale, best = 0, math.inf
    for loss in losses:
        stale, best = (0, loss) if loss < best else (stale + 1, best)
        out.append(overfit_verdict(stale, loss, best, stop_allowed))
    return out
