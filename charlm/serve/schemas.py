"""A completion request's JSON, checked field by field: each mistake is a 400 naming the field and the fix.

The fields are OpenAI's (`prompt`, `max_tokens`, `temperature`, `top_p`, `n`, `stop`, `seed`, `stream`,
`stream_options`, `logprobs`, `echo`, `presence_penalty`, `frequency_penalty`, `user`, and `best_of`,
`logit_bias`, `suffix` where they mean nothing new) plus charlm's own decoding controls under the names
`DecodingOptions` gives them (`top_k`, `min_p`, `typical_p`, `repetition_penalty`, `no_repeat_ngram_size`,
`min_new_tokens`, `ban`, `lines`, `allow_unk`, `strategy`, `beam_width`, `length_penalty`, `exact_beam`).
A field that is neither is refused with the closest name, as OpenAI refuses an unknown argument.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from charlm.api import LanguageModel, Prompt, random_seed
from charlm.errors import CharlmError
from charlm.sampling import MAX_LOGPROBS, DecodingOptions
from charlm.serve.caps import MAX_STOP, MAX_STOP_CHARS, Caps
from charlm.serve.errors import bad_request, from_domain
from charlm.training import MAX_SEED

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass(frozen=True)
class CompletionRequest:
    """A checked request: what to decode, how, and how to answer."""

    prompts: tuple[Prompt, ...]
    n: int  # choices per prompt
    options: DecodingOptions  # one choice's options (num_samples 1; beam: n_best = n)
    seed: int
    stream: bool
    include_usage: bool
    logprobs: int | None  # None: no logprobs; k: each token's log-probability and its k best alternatives
    echo: bool

    @property
    def beam(self) -> bool:
        return self.options.effective_strategy == "beam"

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer, got {_show(value)}", param=name)
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low:,} and {high:,}, got {value:,}", param=name)
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{name} must be a finite number, got {_show(value)}", param=name)
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false, got {_show(value)}", param=name)
    return value


def _strings(name: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise bad_request(f"{name} must be a non-empty string or a list of them, got {_show(value)}", param=name)
    if len(items) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in items):
        raise bad_request(f"{name}: at most {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters", param=name)
    return tuple(items)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


# charlm's own controls, passed to DecodingOptions under their own names, each with its type check.
_CONTROLS: dict[str, Callable[[str, Any], Any]] = {
    "top_k": lambda k, v: _int(k, v, 1, 1 << 31),
    "min_p": _number,
    "typical_p": _number,
    "repetition_penalty": _number,
    "no_repeat_ngram_size": lambda k, v: _int(k, v, 1, 1 << 31),
    "min_new_tokens": lambda k, v: _int(k, v, 0, 1 << 31),
    "ban": _strings,
    "lines": lambda k, v: _int(k, v, 1, 1 << 31),
    "allow_unk": _bool,
    "strategy": lambda k, v: v if isinstance(v, str) else _strings(k, [v])[0],
    "beam_width": lambda k, v: _int(k, v, 1, 1 << 31),
    "length_penalty": _number,
    "exact_beam": _bool,
}
_OPENAI = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "logprobs",
    "echo", "stop", "presence_penalty", "frequency_penalty", "seed", "user", "best_of", "logit_bias", "suffix",
}  # fmt: skip
KNOWN = frozenset(_OPENAI | set(_CONTROLS))


def check_names(body: dict[str, Any]) -> None:
    for name in body:
        if name not in KNOWN:
            close = difflib.get_close_matches(name, sorted(KNOWN), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise bad_request(f"unrecognized request argument supplied: {name!r}{hint}", param=name)


def parse_completion(body: dict[str, Any], lm: LanguageModel, caps: Caps) -> CompletionRequest:
    """Check `body` (the parsed JSON object, `model` already resolved to `lm`) against the API and the caps."""
    check_names(body)
    given = {k: v for k, v in body.items() if v is not None}  # null means "the default", as in OpenAI's API
    _refuse_unsupported(given)
    n = _int("n", given.get("n", 1), 1, caps.max_choices)
    texts = _prompt_texts(given.get("prompt", ""), caps)
    if len(texts) * n > caps.max_choices:
        raise bad_request(
            f"{len(texts)} prompts x n={n} is {len(texts) * n} choices, above this server's cap of "
            f"{caps.max_choices}; send fewer prompts or a smaller n",
            param="n",
        )
    stream = _bool("stream", given.get("stream", False))
    usage = _stream_usage(given.get("stream_options"), stream)
    logprobs = _int("logprobs", given["logprobs"], 0, MAX_LOGPROBS) if "logprobs" in given else None
    echo = _bool("echo", given.get("echo", False))
    options = _options(given, n, caps, lm)
    if options.effective_strategy == "beam" and (stream or logprobs is not None):
        which = "stream" if stream else "logprobs"
        raise bad_request(
            f"beam search cannot {'stream' if stream else 'report per-token logprobs'} (its hypotheses change "
            f"until the end); drop {which} or use sampling",
            param=which,
        )
    seed = _int("seed", given["seed"], 0, MAX_SEED) if "seed" in given else random_seed()
    try:
        prompts = tuple(lm.prompt(t) for t in texts)
    except CharlmError as exc:
        raise from_domain(exc, param="prompt") from None
    return CompletionRequest(prompts, n, options, seed, stream, usage, logprobs, echo)


def _refuse_unsupported(given: dict[str, Any]) -> None:
    if "suffix" in given:
        raise bad_request("suffix is not supported: a charlm model continues text, it cannot fill in", "suffix")
    if given.get("logit_bias"):
        raise bad_request("logit_bias is not supported; use ban to forbid strings", param="logit_bias")
    if "best_of" in given and given["best_of"] != given.get("n", 1):
        raise bad_request("best_of is not supported (leave it out or equal to n)", param="best_of")
    if "user" in given and not isinstance(given["user"], str):
        raise bad_request(f"user must be a string, got {_show(given['user'])}", param="user")
    if not isinstance(given.get("model", ""), str):
        raise bad_request(f"model must be a string, got {_show(given['model'])}", param="model")


def _prompt_texts(prompt: Any, caps: Caps) -> list[str]:
    texts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request(
            f"prompt must be a string or a non-empty list of strings (token ids are not accepted), got {_show(prompt)}",
            param="prompt",
        )
    longest = max(len(t) for t in texts)
    if longest > caps.max_prompt_chars:
        raise bad_request(
            f"a prompt of {longest:,} characters is above this server's cap of {caps.max_prompt_chars:,}; "
            "send a shorter prompt",
            param="prompt",
            code="context_length_exceeded",
        )
    return texts


def _stream_usage(value: Any, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise bad_request("stream_options is only allowed with stream: true", param="stream_options")
    if not isinstance(value, dict) or set(value) - {"include_usage"}:
        raise bad_request('stream_options must be {"include_usage": true|false}', param="stream_options")
    return _bool("stream_options.include_usage", value.get("include_usage", False))


def _options(given: dict[str, Any], n: int, caps: Caps, lm: LanguageModel) -> DecodingOptions:
    """The decoding options of one choice: OpenAI's fields under charlm's names, then charlm's own controls."""
    max_tokens = _int("max_tokens", given.get("max_tokens", DEFAULT_MAX_TOKENS), 1, caps.max_tokens)
    kw: dict[str, Any] = {"max_new_tokens": max_tokens}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if name in given:
            kw[name] = _number(name, given[name])
    if "stop" in given:
        kw["stop"] = _strings("stop", given["stop"])
    for name, check in _CONTROLS.items():
        if name in given:
            kw[name] = check(name, given[name])
    if kw.get("strategy") == "beam":
        kw["n_best"] = n
        kw["beam_width"] = max(n, kw.get("beam_width", DecodingOptions.beam_width))
        if kw["beam_width"] > caps.max_rows:
            raise bad_request(
                f"beam_width {kw['beam_width']} is above this server's {caps.max_rows} rows; ask for a narrower beam",
                param="beam_width",
            )
    try:
        return lm.decoding(**kw)
    except CharlmError as exc:
        raise from_domain(exc, param=_named_in(str(exc), kw)) from None


def _named_in(message: str, fields: dict[str, Any]) -> str | None:
    """The request field a decoding error names first (DecodingOptions says "top-p" for top_p)."""
    found = [
        (message.find(spelt), name)
        for name in fields
        for spelt in (name, name.replace("_", "-"), name.replace("_", " "))
    ]
    found = [(at, name) for at, name in found if at >= 0]
    name = min(found)[1] if found else None
    return "max_tokens" if name == "max_new_tokens" else name
