"""How to decode: `DecodingOptions`, checked on creation, with the limits that keep a request finite."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from charlm.errors import ConfigError

STRATEGIES = ("greedy", "sample", "beam")
# Upper bounds: a request past them is a typo or a runaway script, and would hold
# (count x vocabulary) logits or run for hours; each is a one-line error naming the bound.
MAX_NEW_TOKENS = 1_000_000
MAX_SAMPLES = 1024
MAX_BEAM_WIDTH = 256

# A user's own logit filter: (logits (B, V), ids generated so far (B, T)) -> new logits (B, V).
LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode: the strategy, its knobs and the stop conditions. Checked on creation."""

    strategy: str = "sample"
    max_new_tokens: int = 500
    temperature: float = 1.0  # 0 means greedy
    top_k: int | None = None
    top_p: float | None = None
    beam_width: int = 5
    length_penalty: float = 1.0  # alpha in sum(log p) / length^alpha
    n_best: int | None = None  # beam: hypotheses returned; None = beam_width
    exact_beam: bool = False  # beam: search to max_new_tokens (exhaustive when wide) instead of stopping early
    num_samples: int = 1
    stop: tuple[str, ...] = ()
    lines: int | None = None  # stop after this many line ends (<eos> for the word kind: None = 1)
    allow_unk: bool = False  # let the model emit <unk> (masked by default: it has no text)
    # Controls (charlm.sampling.history and filters); each is off at its default and then costs nothing.
    repetition_penalty: float = 1.0  # emitted ids: positive logits / this, negative ones * this
    presence_penalty: float = 0.0  # logit -= this for each id emitted at least once
    frequency_penalty: float = 0.0  # logit -= this * times emitted
    no_repeat_ngram_size: int | None = None  # never emit an n-gram of this size twice
    min_p: float | None = None  # sampling: keep ids with p >= min_p * p_max
    typical_p: float | None = None  # sampling: locally typical sampling's mass
    min_new_tokens: int = 0  # no <eos>, counted line end or stop string before this many tokens
    ban: tuple[str, ...] = ()  # strings never generated (their token sequences, across token boundaries)
    # the library's hook: the user's filters, applied in order after the ones above, before temperature
    logits_processors: tuple[LogitsProcessor, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        check_int("length", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        if not _finite_number(self.temperature) or self.temperature < 0:
            raise ConfigError(f"temperature must be a number > 0 (or 0 for greedy), got {self.temperature}")
        if self.top_k is not None:
            check_int("top-k", self.top_k, 1)
        if self.top_p is not None and not (_finite_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ConfigError(
                f"top-p must be in (0, 1], got {self.top_p}; 0.9 keeps the tokens making up 90% of the probability"
            )
        check_int("beam width", self.beam_width, 1, MAX_BEAM_WIDTH)
        if not _finite_number(self.length_penalty) or self.length_penalty < 0:
            raise ConfigError(
                "length penalty must be a number >= 0 (0 ranks by the "
                f"raw sum of log-probabilities), got {self.length_penalty}"
            )
        if self.n_best is not None:
            check_int("n-best", self.n_best, 1)
            if self.n_best > self.beam_width:
                raise ConfigError(
                    f"n-best {self.n_best} is more than the beam width {self.beam_width}; "
                    "raise --beam-width or lower --n-best"
                )
        check_int("num-samples", self.num_samples, 1, MAX_SAMPLES)
        if self.lines is not None:
            check_int("lines", self.lines, 1)
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError("stop strings must be a list of non-empty strings; drop the empty --stop")
        self._check_controls()
        if self.num_samples > 1 and self.effective_strategy != "sample":
            hint = (
                "--n-best for several beam hypotheses"
                if self.strategy == "beam"
                else "--strategy sample with a temperature > 0"
            )
            raise ConfigError(
                f"--num-samples {self.num_samples} needs sampling ({self.effective_strategy} gives one answer); "
                f"use {hint}"
            )

    def _check_controls(self) -> None:
        if not _finite_number(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise ConfigError(
                f"repetition penalty must be a number > 0 (1 is off, 1.2 is typical), got {self.repetition_penalty}"
            )
        for name, value in (("presence", self.presence_penalty), ("frequency", self.frequency_penalty)):
            if not _finite_number(value) or not -2.0 <= value <= 2.0:
                raise ConfigError(f"{name} penalty must be in [-2, 2] (0 is off), got {value}")
        if self.no_repeat_ngram_size is not None:
            check_int("no-repeat-ngram-size", self.no_repeat_ngram_size, 1)
        for name, p in (("min-p", self.min_p), ("typical-p", self.typical_p)):
            if p is None:
                continue
            if not (_finite_number(p) and 0.0 < p <= 1.0):
                raise ConfigError(f"{name} must be in (0, 1], got {p}")
            if self.effective_strategy != "sample":
                raise ConfigError(
                    f"{name} shapes sampling, and {self.effective_strategy} decoding does not sample; "
                    "drop it or use --strategy sample with a temperature > 0"
                )
        if isinstance(self.ban, str) or not isinstance(self.ban, tuple):
            object.__setattr__(self, "ban", (self.ban,) if isinstance(self.ban, str) else tuple(self.ban or ()))
        if any(not isinstance(s, str) or not s for s in self.ban):
            raise ConfigError("banned strings must be non-empty strings; drop the empty --ban")
        if not isinstance(self.logits_processors, tuple):
            object.__setattr__(self, "logits_processors", tuple(self.logits_processors or ()))
        if not all(callable(f) for f in self.logits_processors):
            raise ConfigError("logits_processors must be functions (logits (B, V), ids (B, T)) -> logits (B, V)")
        check_int("min-new-tokens", self.min_new_tokens, 0)
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(
                f"min-new-tokens {self.min_new_tokens:,} is above --length {self.max_new_tokens:,}; "
                "lower it or raise --length"
            )

    @property
    def history_filters(self) -> bool:
        """Whether any filter that reads the generated ids is on (penalties, no-repeat n-gram, min_new_tokens)."""
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
            or self.no_repeat_ngram_size is not None
            or self.min_new_tokens > 0
            or bool(self.logits_processors)
            or bool(self.ban)
        )

    @property
    def effective_strategy(self) -> str:
        """`sample` at temperature 0 is greedy."""
        return "greedy" if self.strategy == "sample" and self.temperature == 0 else self.strategy

    def check_vocab(self, vocab_size: int) -> None:
        """The checks that need the model's vocabulary."""
        if self.top_k is not None and self.top_k > vocab_size:
            raise ConfigError(
                f"top-k {self.top_k} is above the vocabulary size {vocab_size}; use a top-k of at most {vocab_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["stop"], d["ban"] = list(self.stop), list(self.ban)
        d["logits_processors"] = [getattr(f, "__name__", type(f).__name__) for f in self.logits_processors]
        return d


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """A one-line ConfigError unless `value` is an integer in [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer of at least {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} {value:,} is above the limit of {high:,}; ask for at most {high:,}")
