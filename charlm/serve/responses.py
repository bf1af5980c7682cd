"""Completion bodies and stream chunks in the shape of OpenAI's `text_completion` objects.

charlm's finish reasons map to OpenAI's two: `length` (max_tokens reached) and `stop` (a stop string, the
line count of `lines`, or <eos>). Each body also carries `seed`: the seed the text was drawn with (the
request's, or a fresh one when it gave none), so that any answer can be asked for again.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from charlm.serve.scheduler import Piece
from charlm.serve.schemas import CompletionRequest

FINISH = {"length": "length", "stop": "stop", "eos": "stop"}


@dataclass
class Meta:
    """What every body and chunk of one response repeats."""

    model: str
    seed: int
    id: str = field(default_factory=lambda: "cmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))
    _prefix: str | None = None

    def head(self) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model}

    @property
    def prefix(self) -> str:
        """The start of every stream chunk, up to its choice's text."""
        if self._prefix is None:
            self._prefix = "data: " + _json(self.head())[:-1] + ',"choices":[{"text":'
        return self._prefix


@dataclass
class Choice:
    """One choice as its pieces arrive: the text so far, its tokens, and its result at the end."""

    index: int
    text: list[str] = field(default_factory=list)
    tokens: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0
    token_chars: int = 0  # characters of the tokens so far: the next token's text_offset

    def add(self, piece: Piece) -> None:
        self.text.append(piece.text)
        if piece.tokens:
            self.tokens.extend(piece.tokens)
            self.token_chars += sum(len(t.text) for t in piece.tokens)
        if piece.result is not None:
            self.finish_reason = FINISH.get(piece.result.finish_reason, "stop")
            self.completion_tokens = len(piece.result.ids)


def logprobs_body(tokens: list[Any], k: int, offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy logprobs object: each token's text, log-probability (nats), best k alternatives, offset."""
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top[:k]) for t in tokens] if k > 0 else None,
        "text_offset": offsets,
    }


def usage(req: CompletionRequest, completion_tokens: int) -> dict[str, int]:
    prompt_tokens = sum(len(p.ids) for p in req.prompts)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(meta: Meta, req: CompletionRequest, choices: list[Choice]) -> dict[str, Any]:
    out = []
    for c in choices:
        prefix = req.prompts[c.index // req.n].text if req.echo else ""
        out.append(
            {
                "text": prefix + "".join(c.text),
                "index": c.index,
                "logprobs": logprobs_body(c.tokens, req.logprobs, len(prefix)) if req.logprobs is not None else None,
                "finish_reason": c.finish_reason,
            }
        )
    completion = sum(c.completion_tokens for c in choices)
    return meta.head() | {"choices": out, "usage": usage(req, completion), "seed": meta.seed}


def chunk(meta: Meta, req: CompletionRequest, choice: Choice, pieces: list[Piece], first: bool, offset: int) -> str:
    """One server-sent event: the text `pieces` of one choice released (several when they arrived together).

    Written from a per-response template, not by `json.dumps` of the whole object: with 32 streams a server
    writes tens of thousands of these a second, and this is the event loop's main work."""
    text = "".join(p.text for p in pieces)
    if req.echo and first:
        text = req.prompts[choice.index // req.n].text + text
    tokens = [t for p in pieces for t in p.tokens]
    logprobs = _json(logprobs_body(tokens, req.logprobs, offset)) if req.logprobs is not None else "null"
    finish = "null" if choice.finish_reason is None else f'"{choice.finish_reason}"'
    usage = ',"usage":null' if req.include_usage else ""
    return (
        f'{meta.prefix}{_json(text)},"index":{choice.index},"logprobs":{logprobs},"finish_reason":{finish}}}],'
        f'"seed":{meta.seed}{usage}}}\n\n'
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def usage_chunk(meta: Meta, req: CompletionRequest, completion_tokens: int) -> str:
    return event(meta.head() | {"choices": [], "usage": usage(req, completion_tokens), "seed": meta.seed})


def event(body: dict[str, Any]) -> str:
    return f"data: {_json(body)}\n\n"


DONE = "data: [DONE]\n\n"
