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
from dataclasses import dataclass
from typing import Any

from charlm.training.clusters import (  # noqa: F401 - the output layer's choice, read here by its callers
    ADAPTIVE_MIN_VOCAB,
    CLUSTER_COST,
    choose_cutoffs,
    output_layer,
)
from charlm.training.config import TrainConfig

# Widths tried, smallest first (2 layers each; --layers changes the depth). No wider than 1024: at the same
# rate a 2x1536 char model learned far slower per step (fp32, 100 steps on 4.4M characters: 2.841 nats/char
# against 2.121 for 2x1024 and 2.142 for 2x512; benchmarks/results_width.md), so it is not chosen for you.
WIDTHS = (128, 192, 256, 384, 512, 768, 1024)
# With no time budget (a step or epoch limit), the width by the size of the training text.
WIDTH_BY_TOKENS = ((300_000, 256), (3_000_000, 384), (30_000_000, 512), (float("inf"), 768))
# The widest model a training text of this many tokens gets, by level, whatever the budget and the machine.
# A wider model has more parameters than a small text can pin down: on a 74k-word text a 2x1024 tied word
# model never left the unigram level while a 2x512 one learned (issue 21); WikiText-2's 217k-word valid split
# trained best at 512 in 10 minutes (benchmarks/results_word.md); a 2x512 char model on 88k characters
# peaked after 4.5 passes (1.561 nats/char) and then only memorised (benchmarks/results_matrix.md).
MAX_WIDTH = {
    "word": ((120_000, 384), (400_000, 512), (1_500_000, 768), (float("inf"), 1024)),
    "char": ((250_000, 256), (1_500_000, 512), (5_000_000, 768), (float("inf"), 1024)),
}
MAX_WIDTH["subword"] = MAX_WIDTH["word"]
# Optimiser steps the chosen width must reach in the budget (see choose_width).
MIN_STEPS = 1500
# The batch (parallel streams): small batches give a CPU more updates per second of compute.
BATCH = {"cpu": 16, "cuda": 64}
LR = 5e-3
# bf16 autocast on a CPU is used (under --precision auto) only when this much faster than fp32 here ...
BF16_MIN_GAIN = 1.1
# ... and only up to BF16_MAX_WIDTH: speed alone chose bf16 on an Intel Xeon (AMX) for a 2x1024 char model
# that then reached 3.36 nats/char after 250 steps against fp32's 1.75 (issue 21), while 2x512 in bf16
# learned as fp32 on that machine (the 3-minute quickstart, 1.408) and on an AMD EPYC (AVX512-BF16).
BF16_MAX_WIDTH = 512
# ... and when a short paired trial learns as well: BF16_CHECK_STEPS steps of the chosen model in each
# precision from one start on the run's own text (the rate rising as a run's warm-up does), where bf16
# must make at least BF16_KEEP of fp32's progress (first loss minus the mean of the last BF16_CHECK_LAST),
# less BF16_LOSS_SLACK nats. It catches a precision that does not learn at all; measured here after 20
# steps at the peak rate: bf16 minus fp32 -0.0004 (2x256), +0.0007 (2x512) nats.
BF16_CHECK_STEPS = 16
BF16_CHECK_LAST = 4
BF16_KEEP = 0.9
BF16_LOSS_SLACK = 0.02
# A run limited by time alone reads a text at most this many times (by level): beyond it a small text is
# only memorised while the rate is still high, and the run ends before its decay helps. On WikiText-2's
# 185k-token valid split, a 10-minute run (30 passes) peaked at 9 passes and scored 173.3 on the test part,
# worse than the 3-minute run (8.7 passes, decayed to the end: 170.9); the 100 KB char text of issue 21 read
# 155 times peaked at 9. Shakespeare's 252k tokens still gained at 19 passes (benchmarks/results_matrix.md).
# Char: on tinyshakespeare (1.0M training characters, 2x512) 3-minute runs that read it 4.0 and 4.4 times
# scored 1.405 and 1.413 nats/char; 10-minute runs capped at 5 passes 1.419, at 8 passes 1.417, uncapped (13
# passes) 1.427. On a 100 KB text (2x256) 5 passes (283 steps) scored 1.574, 8-10 passes (450-570 steps)
# 1.520-1.525, 15 passes 1.540, 30 passes 1.557 (benchmarks/results_quality.md, issue 21). So a char run
# stops after 4 passes, but no run stops before MIN_CAPPED_STEPS steps: the small text needed its steps
# more than it feared memorising.
MAX_PASSES = {"char": 4.0, "subword": 15.0, "word": 15.0}
MIN_CAPPED_STEPS = 500
# Validation scores the validation text at about this many times the training speed (forward only, 32
# streams), and the rule that promises MIN_STEPS steps counts that time. Measured in fp32 on an AMD EPYC:
# 3.52x (2x256 char), 3.69x (2x512 char), 2.76x (2x512 word, full softmax); 3 errs on the side of time.
EVAL_SPEEDUP = 3.0
# Word level (AWD-LSTM scaled down for a CPU budget; benchmarks/results_word.md): Adam's rate
# for a tied word model, and the regularisers by passes over the text (see word_regularisers).
WORD_LR = 3e-3
# The model's dropouts, which autosize chooses by the passes over the text when they are left open.
DROPOUTS = ("dropout", "dropout_input", "dropout_embed", "weight_drop")


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


def _ending(v: list[float]) -> float:
    """A short run's loss at its end: the mean of its last BF16_CHECK_LAST losses."""
    return sum(v[-BF16_CHECK_LAST:]) / len(v[-BF16_CHECK_LAST:])


def bf16_learns(losses: dict[str, list[float]]) -> bool:
    """Whether bf16's losses of a short paired run (`charlm.training.speed.learning_losses`) keep up with fp32's."""

    def progress(v: list[float]) -> float:
        return v[0] - _ending(v)

    return progress(losses["bf16"]) >= BF16_KEEP * progress(losses["fp32"]) - BF16_LOSS_SLACK


def bf16_trial(losses: dict[str, list[float]]) -> tuple[bool, str]:
    """(bf16 keeps up, the reason shown in the chosen line) for a short paired run's losses."""
    shown = f"loss {_ending(losses['bf16']):.3f} against fp32's {_ending(losses['fp32']):.3f}"
    shown += f" after {len(losses['fp32'])} steps"
    if bf16_learns(losses):
        return True, f"bf16 (the faster here, and it learns as fp32 does: {shown})"
    return False, f"fp32 (bf16 is faster here but learns worse: {shown})"


def max_width(level: str, train_tokens: int) -> int:
    """The widest model of `level` for a training text of `train_tokens` tokens (MAX_WIDTH)."""
    return next(w for limit, w in MAX_WIDTH.get(level, MAX_WIDTH["char"]) if train_tokens <= limit)


def step_tokens(tokens_per_step: int, valid_tokens: int, eval_interval: int) -> float:
    """Training tokens' worth of time one optimiser step costs, validation's share included.

    Validation scores `valid_tokens` every `eval_interval` steps at EVAL_SPEEDUP times
    the training speed, so it adds valid_tokens / (EVAL_SPEEDUP x eval_interval).
    """
    return tokens_per_step + valid_tokens / (EVAL_SPEEDUP * max(1, eval_interval))


def word_regularisers(epochs: float) -> dict[str, float]:
    """Word-level regularisation by passes over the text: light for a first pass, AWD-LSTM-like
    (output 0.4, input 0.3, embedding 0.1, weight drop 0.2; scaled down from its PTB values)
    once the text is seen many times, as it is on a small corpus in a 10-minute budget, and
    stronger still from 12 passes."""
    if epochs < 1.5:
        return dict(dropout=0.1, dropout_input=0.1, dropout_embed=0.0, weight_drop=0.0)
    if epochs < 5:
        return dict(dropout=0.25, dropout_input=0.2, dropout_embed=0.05, weight_drop=0.1)
    if epochs < 12:
        return dict(dropout=0.4, dropout_input=0.3, dropout_embed=0.1, weight_drop=0.2)
    # a small text read a dozen times or more: closer to AWD-LSTM's own values (a 74k-word text overfit after
    # ~20 passes under the tier above, while PyTorch's example with dropout 0.5 kept improving; issue 21)
    return dict(dropout=0.5, dropout_input=0.4, dropout_embed=0.1, weight_drop=0.3)


def choose_width(
    measure: Callable[[int], float], budget: float, tokens_per_step: float, widest: int | None = None
) -> tuple[int, float]:
    """The widest of WIDTHS (up to `widest`) that reaches MIN_STEPS steps in `budget` seconds: (width, its tokens/s).

    `measure(width)` is the training speed of that width on this machine in tokens
    per second; `tokens_per_step` what a step costs in training tokens' time,
    validation's share included (`step_tokens`). Widths are tried smallest first
    and the search stops at the first that falls short, so a slow machine measures
    only small models.
    """
    widths = [w for w in WIDTHS if widest is None or w <= widest] or [WIDTHS[0]]
    chosen = (widths[0], measure(widths[0]))
    for width in widths[1:]:
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
    *,
    valid_tokens: int = 0,
    learns: Callable[[TrainConfig], dict[str, list[float]]] | None = None,
) -> Choice:
    """`config` with every option left to charlm (None) chosen for this run, the machine and the corpus.

    `measure(config)` trains a few steps of that configuration (its precision
    "fp32" or "bf16") here and returns tokens/s. `bf16`: the device may run bf16
    autocast, to be measured against fp32 when the precision is "auto".
    `valid_tokens`: what each validation scores, whose time the step rule counts.
    `learns(config)`: the losses of a short run of the chosen model in fp32 and in
    bf16 (`charlm.training.speed.learning_losses`); bf16 that is faster but learns worse
    (`bf16_learns`) is refused, and the width chosen again at fp32's speeds.
    """
    t0 = time.perf_counter()
    s = _Sizing(config, train_tokens, device_type, measure, bf16, valid_tokens)
    s.choose_width()
    precision, precision_why = s.choose_precision(learns)
    why = [s.width_reason()] if config.model.hidden_size is None else []
    s.c = c = s.c.with_level_defaults()  # a tied word embedding follows the width
    if s.word and config.model.emb_size is None:
        m = c.model
        why.append(f"embedding {m.emb_size}{' tied' if m.tie_weights else ''}, window {c.task.bptt}, lr {c.optim.lr:g}")
    why += s.choose_regularisers()
    if precision_why:
        why.append(precision_why)
    return Choice(s.c, "; ".join(why), time.perf_counter() - t0, precision)


class _Sizing:
    """One `resolve`: the run's limits and text, the options as chosen so far (`c`), the speeds measured."""

    def __init__(
        self,
        config: TrainConfig,
        train_tokens: int,
        device_type: str,
        measure: Callable[[TrainConfig], float],
        bf16: bool,
        valid_tokens: int,
    ) -> None:
        c = config.with_level_defaults()
        self.word, self.measure, self.train_tokens = c.tokenizer.level == "word", measure, train_tokens
        self.precisions: dict[int | None, str] = {}  # under auto bf16: the faster precision of each width measured
        self.fp32_speeds: dict[int | None, float] = {}
        self.auto_bf16 = bf16 and c.run.precision == "auto"
        if c.task.batch_size is None:
            c = c.replace(batch_size=default_batch(device_type))
        if c.optim.lr is None:
            c = c.replace(lr=WORD_LR if self.word else LR)
        if self.word and c.model.adaptive_softmax is None:
            c = c.replace(adaptive_softmax=False)  # no token counts given (charlm.training.speed.choose uses them)
        assert c.task.bptt is not None and c.task.batch_size is not None
        self.c, self.tokens_per_step = c, c.task.batch_size * c.task.bptt
        scored = min(valid_tokens, c.run.eval_tokens) if c.run.eval_tokens else valid_tokens
        self.per_step = step_tokens(self.tokens_per_step, scored, c.run.eval_interval)
        self.epochs, self.max_steps, self.budget = c.run.limits
        self.widest = max_width(c.tokenizer.level, train_tokens)
        limited_by_time = self.budget is not None and self.epochs is None and self.max_steps is None
        self.budget_rule = c.model.hidden_size is None and limited_by_time
        self.speed: float | None = None  # the chosen width's tokens/s, when the budget rule measured it

    def speed_of(self, c: TrainConfig) -> float:
        """`measure(c)`, once per width; under auto bf16 the faster precision's, remembered per width."""
        if not self.auto_bf16 or (c.model.hidden_size or 0) > BF16_MAX_WIDTH:
            if self.auto_bf16:
                self.precisions[c.model.hidden_size] = "fp32"
            if c.model.hidden_size not in self.fp32_speeds:
                fp32 = c if c.run.precision != "auto" else c.replace(precision="fp32")
                self.fp32_speeds[c.model.hidden_size] = self.measure(fp32)
            return self.fp32_speeds[c.model.hidden_size]

        def timed(p: str) -> float:
            speed = self.measure(c.replace(precision=p))
            if p == "fp32":
                self.fp32_speeds[c.model.hidden_size] = speed
            return speed

        self.precisions[c.model.hidden_size], speed = faster_precision(timed)
        return speed

    def trial(self, width: int | None = None) -> TrainConfig:
        """`c` with what is still open set for measuring speed: no dropout (weight drop costs little)."""
        t = self.c.replace(hidden_size=width or self.c.model.hidden_size, dropout=0.0)
        zeros: dict[str, Any] = {
            k: 0.0 for k in ("dropout_input", "dropout_embed", "weight_drop") if getattr(t.model, k) is None
        }
        t = t.replace(**zeros)
        return t.with_level_defaults()

    def widest_in_budget(self) -> None:
        assert self.budget is not None
        width, self.speed = choose_width(
            lambda w: self.speed_of(self.trial(w)), self.budget, self.per_step, self.widest
        )
        self.c = self.c.replace(hidden_size=width)

    def choose_width(self) -> None:
        """An open --hidden: the widest in the budget here, or by the size of the text under a step or epoch limit."""
        if self.c.model.hidden_size is not None:
            return
        if self.budget_rule:
            self.widest_in_budget()
            return
        width = next(w for limit, w in WIDTH_BY_TOKENS if self.train_tokens <= limit)
        self.c = self.c.replace(hidden_size=min(width, self.widest) if self.widest is not None else width)

    def choose_precision(
        self, learns: Callable[[TrainConfig], dict[str, list[float]]] | None
    ) -> tuple[str | None, str]:
        """Under auto bf16: the faster precision of the chosen width, if bf16 also learns as fp32 does (a refused
        bf16 chooses the width again at fp32's speeds). (precision, why), or (None, "") when not measured."""
        if not self.auto_bf16:
            return None, ""
        if self.c.model.hidden_size not in self.precisions:
            self.speed_of(self.trial())
        precision = self.precisions[self.c.model.hidden_size]
        why = f"{precision} (the faster here)"
        if precision == "bf16" and learns is not None:
            keeps, why = bf16_trial(learns(self.trial()))
            if not keeps:  # the whole run trains in fp32, and so its width is the one fp32's speed allows
                precision, self.auto_bf16 = "fp32", False
                if self.budget_rule:
                    self.widest_in_budget()
        return precision, why

    def width_reason(self) -> str:
        m = self.c.model
        if not self.budget_rule:
            return f"{m.num_layers}x{m.hidden_size} for {self.train_tokens:,} training tokens"
        cap = f", at most {self.widest} for {self.train_tokens:,} training tokens" if self.widest is not None else ""
        return f"{m.num_layers}x{m.hidden_size}: the widest that trains {MIN_STEPS:,}+ steps in the budget here{cap}"

    def choose_regularisers(self) -> list[str]:
        """Open dropouts by the passes over the text the run will make (a time-limited run capped at MAX_PASSES)."""
        c = self.c
        why: list[str] = []
        open_regs = [k for k in DROPOUTS if getattr(c.model, k) is None]
        if not open_regs:
            return why
        seen = _tokens_seen(
            self.trial(), self.speed, self.max_steps, self.epochs, self.budget, self.train_tokens,
            self.tokens_per_step / self.per_step, self.speed_of,
        )  # fmt: skip
        passes = seen / max(1, self.train_tokens)
        floor = MIN_CAPPED_STEPS * self.tokens_per_step / max(1, self.train_tokens)  # passes of MIN_CAPPED_STEPS
        most = max(MAX_PASSES.get(c.tokenizer.level, MAX_PASSES["char"]), floor)
        if self.epochs is None and self.max_steps is None and passes > most:  # the budget would only buy memorising
            why.append(f"stop after {most:.3g} passes over the text (the budget allows about {passes:.0f})")
            c, passes = c.replace(epochs=most, time_budget=self.budget), most
        zero = dict.fromkeys(("dropout_input", "dropout_embed", "weight_drop"), 0.0)
        regs = word_regularisers(passes) if self.word else {"dropout": dropout_for_epochs(passes), **zero}
        chosen: dict[str, Any] = {k: regs[k] for k in open_regs}
        self.c = c = c.replace(**chosen)
        m = c.model
        shown = ", ".join(f"{k.replace('_', ' ')} {getattr(m, k):g}" for k in open_regs if self.word or k == "dropout")
        why.append(f"{shown} for about {passes:.1f} passes over the text")
        return why


def _tokens_seen(
    c: TrainConfig,
    speed: float | None,
    max_steps: int | None,
    epochs: float | None,
    budget: float | None,
    train_tokens: int,
    training_share: float,
    measure: Callable[[TrainConfig], float],
) -> float:
    """How many training tokens the run will read before its first limit.

    `training_share`: the part of the budget's time spent training (the rest validates).
    """
    assert c.task.batch_size is not None and c.task.bptt is not None
    candidates = []
    if epochs is not None:
        candidates.append(epochs * train_tokens)
    if max_steps is not None:
        candidates.append(max_steps * c.task.batch_size * c.task.bptt)
    if budget is not None:
        tokens_per_s = speed if speed is not None else measure(c.replace(dropout=0.0))
        candidates.append(budget * tokens_per_s * training_share)
    return min(candidates)
