"""The adaptive softmax's clusters: whether a run's vocabulary gets one, and where its edges fall.

Decided from the training text's token counts before the model is built (`charlm.training.speed.choose`);
`charlm.training.autosize` re-exports these names, where callers have always found them.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from charlm.errors import ConfigError
from charlm.training.config import TrainConfig

# The adaptive softmax is on by default from this vocabulary size: below it a training step
# gains too little over the full softmax (benchmarks/results_word.md times both).
ADAPTIVE_MIN_VOCAB = 3000
# A tail cluster's fixed cost in decoder rows (its gather, launch and bookkeeping), for choose_cutoffs.
CLUSTER_COST = 256


def choose_cutoffs(counts: np.ndarray) -> tuple[int, ...] | None:
    """Adaptive softmax clusters for ids counted `counts` times (V,), or None when a full softmax is as cheap.

    Ids are frequency-ordered, so a cluster is an id range. The cost of a training
    token in decoder rows is the head (its ids and one row per cluster) plus each
    tail's size times the share of tokens that fall in it, plus CLUSTER_COST per
    tail; head and tail edges are tried on a grid of powers of two (at most four
    tails) and the cheapest wins if it costs under half the full softmax. On
    WikiText-2's 13.8k words the model's pick, [256, 2048, 4096, 8192], measured 10%
    faster (loss forward and backward) than the best with three tails, [256, 2048, 8192].
    """
    v = len(counts)
    share = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)]) / max(1.0, float(np.sum(counts)))
    grid = [g for g in (2**k for k in range(8, 20)) if g < v]

    def cost(cuts: tuple[int, ...]) -> float:
        edges = (*cuts, v)
        tails = sum((b - a) * (share[b] - share[a]) for a, b in zip(edges, edges[1:]))
        return cuts[0] + len(cuts) + tails + CLUSTER_COST * len(cuts)

    best: tuple[float, tuple[int, ...] | None] = (0.5 * v, None)
    for n in (1, 2, 3, 4):
        for cuts in combinations(grid, n):
            if cost(cuts) < best[0]:
                best = (cost(cuts), cuts)
    return best[1]


def output_layer(config: TrainConfig, counts: np.ndarray) -> tuple[TrainConfig, str]:
    """Decide the adaptive softmax (when left open) and its clusters from the training tokens' `counts` (V,).

    Left open, it is on for a word vocabulary of ADAPTIVE_MIN_VOCAB ids or more. Asked
    for on a vocabulary where no split of the ids pays, it is a ConfigError.
    """
    c = config
    if c.model.adaptive_softmax is False or (c.model.adaptive_softmax and c.model.adaptive_cutoffs is not None):
        return c, ""
    wanted = c.model.adaptive_softmax or (c.tokenizer.level == "word" and len(counts) >= ADAPTIVE_MIN_VOCAB)
    cuts = choose_cutoffs(counts) if wanted else None
    if cuts is None:
        if c.model.adaptive_softmax:
            raise ConfigError(
                f"a vocabulary of {len(counts):,} ids is too small for an adaptive softmax to save anything; "
                "drop --adaptive-softmax"
            )
        return c.replace(adaptive_softmax=False), ""
    return c.replace(adaptive_softmax=True, adaptive_cutoffs=cuts), f"adaptive softmax, clusters at {list(cuts)}"
