"""The keyword options of the library face: their names and types, and the one-line error for a misspelt one."""

from __future__ import annotations

import difflib
import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from charlm.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from charlm.sampling import LogitsProcessor


class DecodingKeywords(TypedDict, total=False):
    """How to decode, as keywords of `LanguageModel.decoding`, `.generate` and `.stream`: the fields of
    `charlm.sampling.DecodingOptions` (its defaults apply to what is left out), `stop` also as one string."""

    max_new_tokens: int  # most new tokens (characters for a char model); 500
    strategy: str  # "sample" (default), "greedy" or "beam"
    temperature: float  # sampling: below 1 safer, above 1 wilder; 0 is greedy; 1.0
    top_k: int | None  # sampling: draw only from the k most likely tokens
    top_p: float | None  # sampling: draw from the fewest tokens holding this much probability
    beam_width: int  # beam: hypotheses kept at each step; 5
    length_penalty: float  # beam: score = sum(log p) / length^this; 1.0
    n_best: int | None  # beam: hypotheses returned (default: the beam width)
    exact_beam: bool  # beam: search on to max_new_tokens instead of stopping once nothing live scores better
    num_samples: int  # sampling: continuations drawn as one batch; 1
    stop: str | Sequence[str]  # end each text just before this string (or any of these)
    lines: int | None  # stop after this many line ends (word models: <eos>, 1 by default)
    allow_unk: bool  # let the model emit <unk> (masked by default: it has no text)
    repetition_penalty: float  # generated ids: positive logits / this, negative ones * this; 1.0 (off)
    presence_penalty: float  # logit -= this for each id generated at least once; 0.0 (off)
    frequency_penalty: float  # logit -= this * times generated; 0.0 (off)
    no_repeat_ngram_size: int | None  # never generate the same n ids twice
    min_p: float | None  # sampling: keep ids with p >= min_p * p_max
    typical_p: float | None  # sampling: locally typical sampling's probability mass
    min_new_tokens: int  # no <eos>, counted line end or stop string before this many tokens; 0
    ban: str | Sequence[str]  # strings never generated, even across tokens (other kinds: the tokenizer's spelling)
    # your own filters, each (logits (B, V), ids generated so far (B, T)) -> logits (B, V), applied in order
    # after the controls above and before temperature (sampling, greedy and beam search alike)
    logits_processors: Sequence[LogitsProcessor]


class GenerateKeywords(DecodingKeywords, total=False):
    """The keywords of `LanguageModel.generate` and `.stream`: the decoding options and the seed."""

    # an int seeds a fresh generator (the text `charlm generate --seed` gives); a torch.Generator is drawn on
    # from (a session that goes on); None draws a fresh seed, reported in the result
    seed: int | torch.Generator | None


def check_names(given: Mapping[str, Any], known: Collection[str], what: str) -> None:
    """A one-line ConfigError naming the first keyword of `given` that is not in `known`, with the closest name."""
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean {close[0]}?" if close else f"the {what} options are {', '.join(sorted(known))}"
            raise ConfigError(f"unknown {what} option {name!r}; {hint}")


def random_seed() -> int:
    """A fresh seed for a caller that gave none; it is reported, so any text can be made again."""
    return secrets.randbelow(2**31)
