"""The figures of a text (`TextScore`): sums of NLL, tokens, characters and bytes, and what follows from them.

Figures over several texts are sums, never a mean of means (`total`, `+`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

MAX_UNKNOWN_SHOWN = 20  # distinct unknown units a score keeps for its report
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class TextScore:
    """The figures of one text, or the sum over several (`+`, `total`): all sums, weighted by tokens."""

    tokens: int  # tokens scored: every token of the text
    nll: float  # summed negative log-likelihood, nats
    chars: int  # characters of the text (after BOM removal and CRLF -> LF)
    bytes: int  # UTF-8 bytes of the same text
    oov: int  # tokens scored as <unk> because the tokenizer does not know them
    unknown: tuple[str, ...] = ()  # the first few distinct unknown units (words, characters), for the report

    @property
    def loss(self) -> float:
        """Mean NLL per token, nats."""
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0)) if self.tokens else float("nan")

    @property
    def bits_per_char(self) -> float:
        return self.nll / _LN2 / self.chars if self.chars else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / _LN2 / self.bytes if self.bytes else float("nan")

    @property
    def oov_rate(self) -> float:
        return self.oov / self.tokens if self.tokens else float("nan")

    def __add__(self, other: TextScore) -> TextScore:
        unknown = tuple(dict.fromkeys(self.unknown + other.unknown))[:MAX_UNKNOWN_SHOWN]
        return TextScore(
            self.tokens + other.tokens,
            self.nll + other.nll,
            self.chars + other.chars,
            self.bytes + other.bytes,
            self.oov + other.oov,
            unknown,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        d["unknown"] = list(self.unknown)
        d.update(
            loss=self.loss,
            perplexity=self.perplexity,
            bits_per_char=self.bits_per_char,
            bits_per_byte=self.bits_per_byte,
            oov_rate=self.oov_rate,
        )
        return d


ZERO = TextScore(0, 0.0, 0, 0, 0)


def total(scores: Iterable[TextScore]) -> TextScore:
    """The figures of the texts taken together: sums of NLL, tokens, characters and bytes."""
    out = ZERO
    for s in scores:
        out = out + s
    return out
