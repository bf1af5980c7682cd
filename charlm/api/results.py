"""What the library face returns: generated texts with how they were made, a stream of text pieces, and the
log-probability of a text token by token. Plain data: each can be printed, compared or turned into JSON."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, overload

from charlm.sampling import DecodingOptions, Generation, TextStream


@dataclass(frozen=True)
class Completions(Sequence[Generation]):
    """The results of `LanguageModel.generate` (samples, one greedy text, or the n best beam hypotheses, best
    first) with what made them: a sequence of `Generation`s (text, ids, logprob, finish_reason, score)."""

    prompt: str
    options: DecodingOptions
    results: tuple[Generation, ...]
    seed: int | None  # the seed of the generator; None when the caller passed a generator of its own
    unk_masked: bool  # <unk> was never generated (options.allow_unk is off and the vocabulary has one)
    unknown: tuple[str, ...] = ()  # units of the prompt outside the vocabulary, read as <unk>
    warning: str | None = None  # a one-line warning naming them

    @property
    def strategy(self) -> str:
        """The strategy that ran (`sample` at temperature 0 is `greedy`)."""
        return self.options.effective_strategy

    @property
    def text(self) -> str:
        """The first result's text (the best beam hypothesis); "" when a beam search found none."""
        return self.results[0].text if self.results else ""

    def __len__(self) -> int:
        return len(self.results)

    @overload
    def __getitem__(self, i: int) -> Generation: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Generation]: ...
    def __getitem__(self, i: int | slice) -> Generation | Sequence[Generation]:
        return self.results[i]

    def __iter__(self) -> Iterator[Generation]:
        return iter(self.results)

    def to_dict(self) -> dict[str, Any]:
        """The JSON `charlm generate --json` prints (less the checkpoint's path)."""
        return {
            "prompt": self.prompt,
            "strategy": self.strategy,
            "seed": self.seed,
            "options": self.options.to_dict(),
            "unk_masked": self.unk_masked,
            "results": [r.to_dict() for r in self.results],
        }


class Stream(AbstractContextManager["Stream"]):
    """One continuation as it is produced: iterate for its text pieces; `result` is its `Generation` once the
    pieces are exhausted. Close it (or use it in a `with` block) to stop early: the model gets its mode back."""

    def __init__(self, inner: TextStream, seed: int | None, warning: str | None) -> None:
        self._inner = inner
        self.seed = seed  # None when the caller passed a generator of its own
        self.unknown: tuple[str, ...] = inner.prompt.unknown  # units of the prompt read as <unk>
        self.warning = warning  # a one-line warning naming them

    def close(self) -> None:
        self._inner.close()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def result(self) -> Generation | None:
        return self._inner.result

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)


@dataclass(frozen=True)
class TokenScores:
    """A text's log-probability under a model, token by token (nats): each token predicted from all before it,
    the first after a line end, as `charlm perplexity` reads a text (`LanguageModel.score`)."""

    text: str
    tokens: tuple[str, ...]  # each token's text as the tokenizer decodes it alone (<unk>, <eos> by name)
    ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # ln p(token | the text before it)
    unknown: tuple[str, ...] = ()  # units of the text outside the vocabulary, scored as <unk>

    @property
    def logprob(self) -> float:
        """The text's total log-probability: the sum of `logprobs`."""
        return math.fsum(self.logprobs)

    @property
    def mean(self) -> float:
        """Mean log-probability per token (nan for a text without tokens)."""
        return self.logprob / len(self.logprobs) if self.logprobs else float("nan")

    @property
    def perplexity(self) -> float:
        """exp(-mean): the perplexity per token `charlm perplexity --exact` reports for the same text."""
        return math.exp(min(-self.mean, 700.0)) if self.logprobs else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "ids": list(self.ids),
            "logprobs": list(self.logprobs),
            "logprob": self.logprob,
            "mean": self.mean,
            "perplexity": self.perplexity,
            "unknown": list(self.unknown),
        }
