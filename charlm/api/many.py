"""Many prompts at once: each prompt with its own options and seed, decoded as rows of one running batch
(`charlm.sampling.DecodeBatch`), results given back in input order as soon as the prompts before are done.

A prompt's text is the text `LanguageModel.generate` gives it alone with the same options and seed: each
row draws from its own random stream. Prompt i without a seed of its own gets `seed + i`.
Beam search does not run row by row: such a prompt is searched alone when its turn comes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from charlm.errors import ConfigError
from charlm.runtime import eval_mode
from charlm.sampling import MAX_LOGPROBS, DecodeBatch, DecodingOptions, Generation, Prompt, describe_unknown, generate

if TYPE_CHECKING:
    from charlm.api.results import Completions


class LanguageModel(Protocol):
    """What this module uses of `charlm.api.LanguageModel` (which calls it)."""

    model: Any
    tokenizer: Any

    @property
    def decoding(self) -> Callable[..., DecodingOptions]: ...
    def generator(self, seed: int) -> torch.Generator: ...
    def prompt(self, text: str | Prompt) -> Prompt: ...


MAX_BATCH = 4096  # rows decoded at once, at most (each holds a state and a row of logits)
ALIASES = {"length": "max_new_tokens", "n": "num_samples", "samples": "num_samples"}


@dataclass(frozen=True)
class Request:
    """One prompt, checked: its text as given, as the model reads it, its options, seed and logprobs."""

    text: str
    prompt: Prompt
    options: DecodingOptions
    seed: int
    logprobs: int = 0
    id: Any = None  # the caller's own label for it, given back with its results


def check_logprobs(logprobs: Any, options: DecodingOptions) -> int:
    if isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= MAX_LOGPROBS:
        raise ConfigError(f"logprobs must be an integer from 0 to {MAX_LOGPROBS}, got {logprobs!r}")
    if logprobs and options.effective_strategy == "beam":
        raise ConfigError("logprobs are reported for greedy and sampled tokens, not beam search; drop one")
    return logprobs


def make_request(
    lm: LanguageModel,
    item: str | Mapping[str, Any],
    options: DecodingOptions | None,
    seed: int,
    logprobs: int,
    batch_size: int,
) -> Request:
    """`item` (a prompt, or {"prompt": ..., any decoding option, "seed", "logprobs", "id"}) checked against
    the model; the item's own options replace the shared `options`. One-line ConfigError otherwise."""
    if isinstance(item, str):
        fields: dict[str, Any] = {"prompt": item}
    elif isinstance(item, Mapping):
        fields = {ALIASES.get(k.replace("-", "_"), k.replace("-", "_")): v for k, v in item.items()}
    else:
        raise ConfigError(f"a prompt is a string or an object with a 'prompt', got {type(item).__name__}")
    text = fields.pop("prompt", None)
    if not isinstance(text, str):
        raise ConfigError("each prompt needs a 'prompt' string")
    if not text:
        raise ConfigError('the prompt is empty; give it text (a fresh line: {"prompt": "\\n"})')
    seed = fields.pop("seed", seed)
    logprobs = fields.pop("logprobs", logprobs)
    ident = fields.pop("id", None)
    opts = lm.decoding(options, **fields)
    lm.generator(seed)  # a one-line error for a seed that is not an integer in range
    if opts.effective_strategy != "beam" and opts.num_samples > batch_size:
        raise ConfigError(f"num_samples {opts.num_samples} is above the batch size {batch_size}; raise it")
    return Request(text, lm.prompt(text), opts, seed, check_logprobs(logprobs, opts), ident)


def generate_many(lm: LanguageModel, requests: Sequence[Request], batch_size: int) -> Iterator[Completions]:
    """Decode checked requests as one running batch; yield their `Completions` in input order."""
    from charlm.api.results import Completions  # the results module imports nothing from here

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"batch size must be an integer from 1 to {MAX_BATCH}, got {batch_size!r}")
    batch = DecodeBatch(lm.model, lm.tokenizer, batch_size)
    found: dict[int, list[Generation | None]] = {}
    rows: dict[int, tuple[int, int]] = {}  # row id -> (request, sample)
    done_in = done_out = 0
    unk = lm.tokenizer.unk_id is not None

    def finished(i: int) -> Completions:
        r = requests[i]
        results = tuple(g for g in found.pop(i) if g is not None)
        masked = not r.options.allow_unk and unk
        warning = describe_unknown(lm.tokenizer, r.prompt)
        return Completions(r.text, r.options, results, r.seed, masked, r.prompt.unknown, warning)

    with eval_mode(lm.model):
        while done_out < len(requests):
            while done_in < len(requests):
                r = requests[done_in]
                if r.options.effective_strategy == "beam":
                    if len(batch):
                        break  # searched alone once the rows before it are out
                    found[done_in] = list(generate(lm.model, lm.tokenizer, r.prompt, r.options, r.seed))
                elif batch.free >= r.options.num_samples:
                    one = dataclasses.replace(r.options, num_samples=1)
                    found[done_in] = [None] * r.options.num_samples
                    for s in range(r.options.num_samples):
                        row = batch.add(r.prompt, one, r.seed, sample=s, logprobs=r.logprobs, stream=False)
                        rows[row] = (done_in, s)
                else:
                    break
                done_in += 1
            for event in batch.step():
                if event.done:
                    i, s = rows.pop(event.row)
                    found[i][s] = event.result
            while done_out < done_in and all(g is not None for g in found[done_out]):
                yield finished(done_out)
                done_out += 1
