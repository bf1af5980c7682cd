"""Choosing what the user did not: the model's size, its regularisation, the batch and the rate.

The best model a machine can make in a budget depends on the machine: in 3
minutes a 2-core CPU trains a 2x256 LSTM best, a faster one a wider model. So a
run limited by a time budget measures, before it starts, how fast candidate
shapes train here (a couple of real steps each, smallest first, stopping as soon
as a shape is too slow), and takes the widest one that still gets enough
optimiser steps in the budget; the measurement is charged to the budget. Dropout
follows the number of passes over the corpus that the chosen shape will make:
none within the first epochs, more as it repeats the text. Explicit options
always win, and a checkpoint records what was chosen, so a resume keeps it.

Precision is chosen the same way, per session: under `--precision auto` a CPU
with native bf16 instructions (AVX512-BF16 or AMX) whose torch runs the cell in
bf16 trains each candidate in fp32 and in bf16 autocast and keeps the faster
(bf16 must be BF16_MIN_GAIN times faster); elsewhere a CPU trains in fp32. The
config keeps `auto`, so a resume on another machine decides again there.

The rules were fitted on measurements (benchmarks/results_quality.md) and hold
as ratios against a reference trained on the same machine; see README.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

import numpy as np

from charlm.config import TrainConfig
from charlm.errors import ConfigError

# Widths tried, smallest first (2 layers each; --layers changes the depth).
WIDTHS = (128, 192, 256, 384, 512, 768, 1024, 1536)
# With no time budget (a step or epoch limit), the width by the size of the training text.
WIDTH_BY_TOKENS = ((300_000, 256), (3_000_000, 384), (30_000_000, 512), (float("inf"), 768))
# Optimiser steps the chosen width must reach in the budget (see choose_width).
MIN_STEPS = 1500
# The batch (parallel streams): small batches give a CPU more updates per second of compute.
BATCH = {"cpu": 16, "cuda": 64}
LR = 5e-3
# bf16 autocast on a CPU is used (under --precision auto) only when this much faster than fp32 here.
# Measured per step on tinyshakespeare: same loss as fp32 at equal steps (1.6734 vs 1.6771 after 600).
BF16_MIN_GAIN = 1.1
# Word level (AWD-LSTM scaled down for a CPU budget; benchmarks/results_word.md): Adam's rate
# for a tied word model, and the regularisers by passes over the text (see word_regularisers).
WORD_LR = 3e-3
# The adaptive softmax is on by default from this vocabulary size: below it a training step
# gains too little over the full softmax (benchmarks/results_word.md times both).
ADAPTIVE_MIN_VOCAB = 3000
# A tail cluster's fixed cost in decoder rows (its gather, launch and bookkeeping), for choose_cutoffs.
CLUSTER_COST = 256


@dataclass(frozen=True)
class Choice:
    """What was chosen for a run, and the one line that says why."""

    config: TrainConfig
    reason: str
    seconds: float  # spent measuring, charged to the budget
    precision: str | None = None  # "bf16" or "fp32" when --precision auto was decided by measuring, else None


def default_batch(device_type: str) -> int:
    return BATCH.get(device_type, BATCH["cpu"])


def dropout_for_epochs(epochs: float) -> float:
    """Regularisation matched to how often the text is seen: none for a first pass, 0.1 from 3 epochs, 0.2 from 6."""
    if epochs < 3:
        return 0.0
    return 0.1 if epochs < 6 else 0.2


def faster_precision(measure: Callable[[str], float]) -> tuple[str, float]:
    """("bf16" or "fp32", its tokens/s): bf16 only when BF16_MIN_GAIN times faster than fp32.

    `measure(precision)` is the training speed in that precision here.
    """
    fp32, bf16 = measure("fp32"), measure("bf16")
    return ("bf16", bf16) if bf16 >= BF16_MIN_GAIN * fp32 else ("fp32", fp32)


def word_regularisers(epochs: float) -> dict[str, float]:
    """Word-level regularisation by passes over the text: light for a first pass, AWD-LSTM-like
    (output 0.4, input 0.3, embedding 0.1, weight drop 0.2; scaled down from its PTB values)
    once the text is seen many times, as it is on a small corpus in a 10-minute budget."""
    if epochs < 1.5:
        return dict(dropout=0.1, dropout_input=0.1, dropout_embed=0.0, weight_drop=0.0)
    if epochs < 5:
        return dict(dropout=0.25, dropout_input=0.2, dropout_embed=0.05, weight_drop=0.1)
    return dict(dropout=0.4, dropout_input=0.3, dropout_embed=0.1, weight_drop=0.2)


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
    if c.adaptive_softmax is False or (c.adaptive_softmax and c.adaptive_cutoffs is not None):
        return c, ""
    wanted = c.adaptive_softmax or (c.level == "word" and len(counts) >= ADAPTIVE_MIN_VOCAB)
    cuts = choose_cutoffs(counts) if wanted else None
    if cuts is None:
        if c.adaptive_softmax:
            raise ConfigError(
                f"a vocabulary of {len(counts):,} ids is too small for an adaptive softmax to save anything; "
                "drop --adaptive-softmax"
            )
        return replace(c, adaptive_softmax=False), ""
    return replace(c, adaptive_softmax=True, adaptive_cutoffs=cuts), f"adaptive softmax, clusters at {list(cuts)}"


def choose_width(measure: Callable[[int], float], budget: float, tokens_per_step: int) -> tuple[int, float]:
    """The widest of WIDTHS that reaches MIN_STEPS steps in `budget` seconds: (width, its tokens/s).

    `measure(width)` is the training speed of that width on this machine in tokens
    per second. Widths are tried smallest first and the search stops at the first
    that falls short, so a slow machine measures only small models.
    """
    chosen = (WIDTHS[0], measure(WIDTHS[0]))
    for width in WIDTHS[1:]:
        speed = measure(width)
        if speed * budget / tokens_per_step < MIN_STEPS:
            break
        chosen = (width, speed)
    return chosen


def resolve(
    config: TrainConfig,
    train_tokens: int,
    device_type: str,
    measure: Callable[[TrainConfig], float],
    bf16: bool = False,
) -> Choice:
    """`config` with every option left to charlm (None) chosen for this run, the machine and the corpus.

    `measure(config)` trains a few steps of that configuration (its precision
    "fp32" or "bf16") here and returns tokens/s. `bf16`: the device may run bf16
    autocast, to be measured against fp32 when the precision is "auto".
    """
    t0 = time.perf_counter()
    c = config.with_level_defaults()
    word = c.level == "word"
    why = []
    precisions: dict[int | None, str] = {}
    auto_bf16 = bf16 and c.precision == "auto"

    def speed_of(c: TrainConfig) -> float:  # under auto bf16: the faster precision's, remembered per width
        if not auto_bf16:
            return measure(c if c.precision != "auto" else replace(c, precision="fp32"))
        precisions[c.hidden_size], speed = faster_precision(lambda p: measure(replace(c, precision=p)))
        return speed

    if c.batch_size is None:
        c = replace(c, batch_size=default_batch(device_type))
    if c.lr is None:
        c = replace(c, lr=WORD_LR if word else LR)
    if word and c.adaptive_softmax is None:
        c = replace(c, adaptive_softmax=False)  # no token counts given (charlm.train decides it from them)
    assert c.bptt is not None and c.batch_size is not None
    tokens_per_step = c.batch_size * c.bptt
    epochs, max_steps, budget = c.limits
    speed = None

    def trial(width: int | None = None) -> TrainConfig:
        """`c` with what is still open set for measuring speed: no dropout (weight drop costs little)."""
        t = replace(c, hidden_size=width or c.hidden_size, dropout=0.0)
        zeros: dict[str, Any] = {
            k: 0.0 for k in ("dropout_input", "dropout_embed", "weight_drop") if getattr(t, k) is None
        }
        t = replace(t, **zeros)
        return t.with_level_defaults()

    if c.hidden_size is None:
        if budget is not None and epochs is None and max_steps is None:
            width, speed = choose_width(lambda w: speed_of(trial(w)), budget, tokens_per_step)
            why.append(f"{c.num_layers}x{width}: the widest that trains {MIN_STEPS:,}+ steps in the budget here")
        else:
            width = next(w for limit, w in WIDTH_BY_TOKENS if train_tokens <= limit)
            why.append(f"{c.num_layers}x{width} for {train_tokens:,} training tokens")
        c = replace(c, hidden_size=width)
    c = c.with_level_defaults()  # a tied word embedding follows the width
    if word and config.emb_size is None:
        why.append(f"embedding {c.emb_size}{' tied' if c.tie_weights else ''}, window {c.bptt}, lr {c.lr:g}")
    open_regs = [k for k in ("dropout", "dropout_input", "dropout_embed", "weight_drop") if getattr(c, k) is None]
    if open_regs:
        seen = _tokens_seen(trial(), speed, max_steps, epochs, budget, train_tokens, tokens_per_step, speed_of)
        passes = seen / max(1, train_tokens)
        regs = (
            word_regularisers(passes)
            if word
            else {
                "dropout": dropout_for_epochs(passes),
                **dict.fromkeys(("dropout_input", "dropout_embed", "weight_drop"), 0.0),
            }
        )
        chosen: dict[str, Any] = {k: regs[k] for k in open_regs}
        c = replace(c, **chosen)
        shown = ", ".join(f"{k.replace('_', ' ')} {getattr(c, k):g}" for k in open_regs if word or k == "dropout")
        why.append(f"{shown} for about {passes:.1f} passes over the text")
    precision = None
    if auto_bf16:
        if c.hidden_size not in precisions:
            speed_of(trial())
        precision = precisions[c.hidden_size]
        why.append(f"{precision} (the faster here)")
    seconds = time.perf_counter() - t0
    return Choice(c, "; ".join(why), seconds, precision)


def _tokens_seen(
    c: TrainConfig,
    speed: float | None,
    max_steps: int | None,
    epochs: float | None,
    budget: float | None,
    train_tokens: int,
    tokens_per_step: int,
    measure: Callable[[TrainConfig], float],
) -> float:
    """How many training tokens the run will read before its first limit."""
    candidates = []
    if epochs is not None:
        candidates.append(epochs * train_tokens)
    if max_steps is not None:
        candidates.append(max_steps * tokens_per_step)
    if budget is not None:
        candidates.append(budget * (speed if speed is not None else measure(replace(c, dropout=0.0))))
    return min(candidates)
