"""The limits that keep one request from holding the server: body size, tokens, choices, prompt length, queue."""

from __future__ import annotations

from dataclasses import dataclass, fields

from charlm.errors import ConfigError

MAX_STOP = 16  # stop (and ban) strings per request
MAX_STOP_CHARS = 256  # characters per stop or ban string


@dataclass(frozen=True)
class Caps:
    """Per-request and per-model limits; each is printed at start-up and can be set on the command line."""

    max_body_bytes: int = 1 << 20  # a request body larger than this is refused (413) before it is parsed
    max_tokens: int = 4096  # most new tokens one choice may ask for
    max_choices: int = 16  # n x the prompts of one request: the batch rows one request may hold
    max_prompt_chars: int = 16384  # characters of one prompt (the model reads it before the request joins)
    max_rows: int = 64  # rows decoded together per model (the running batch)
    max_queue: int = 256  # requests waiting for rows per model; past it a request is refused (429)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{f.name.replace('_', '-')} must be an integer of at least 1, got {value!r}")
        if self.max_choices > self.max_rows:
            raise ConfigError(
                f"max-choices {self.max_choices} is above max-rows {self.max_rows}: one request could never "
                "be admitted; raise --max-rows or lower --max-choices"
            )

    def describe(self) -> str:
        """One line for the start-up banner."""
        return (
            f"caps: body {self.max_body_bytes:,} bytes, max_tokens {self.max_tokens:,}, "
            f"{self.max_choices} choices a request, prompt {self.max_prompt_chars:,} chars, "
            f"{self.max_rows} rows a model, {self.max_queue} queued a model"
        )
