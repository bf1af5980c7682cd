"""Text around decoding: prompts in, stable text pieces out, stop rules, and the results.

A prompt is read after a line end (`charlm.data.tokenizers.line_start_id`), as
evaluation reads every text, so the log-probabilities here and `charlm
perplexity` agree. Text comes out a piece at a time at constant cost per token
(`TextDecoder`), is cut at stop strings or a line count (`StopMatcher`), and
each finished sequence becomes a `Generation`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from charlm.data import line_start_id, normalise_newlines
from charlm.errors import ConfigError, TokenizerError
from charlm.sampling.options import DecodingOptions
from charlm.sampling.protocols import TextCodec


# ------------------------------------------------------------------ prompt
@dataclass(frozen=True)
class Prompt:
    """A prompt as the model reads it: a line-end primer, then the prompt's tokens."""

    text: str
    ids: tuple[int, ...]
    unknown: tuple[str, ...] = ()  # units of the text that became <unk>


def encode_prompt(tokenizer: TextCodec, text: str) -> Prompt:
    """Text -> a `Prompt`. Units outside the vocabulary become <unk> (listed in `unknown`).

    The model first reads a line end, as `charlm.evaluation.scoring` does before every text,
    so a prompt is read as the start of a line (where "ROMEO:" sits in the corpus)
    and an empty prompt starts a fresh line.
    """
    text = normalise_newlines(text)  # "\r\n" and "\r" read as the corpus reader reads them
    unknown = tuple(tokenizer.unknown_units(text)) if text else ()
    if unknown and tokenizer.unk_id is None:
        raise TokenizerError(
            f"the prompt has {_units(tokenizer, len(unknown))} this checkpoint cannot represent ({_quote(unknown)}); "
            "remove them"
        )
    start = line_start_id(tokenizer)
    ids = (() if start is None else (start,)) + (tuple(tokenizer.encode(text)) if text else ())
    if not ids:
        raise ConfigError(f"this {tokenizer.kind} tokenizer has no line end to start from; give a prompt")
    return Prompt(text, ids, unknown)


def _units(tokenizer: TextCodec, n: int) -> str:
    noun = {"char": "character", "word": "word"}.get(tokenizer.kind, "piece")
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _quote(units: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(u) for u in units[:limit])
    return shown + (f" and {len(units) - limit} more" if len(units) > limit else "")


def describe_unknown(tokenizer: TextCodec, prompt: Prompt) -> str | None:
    """A one-line warning about the prompt's out-of-vocabulary units, or None."""
    if not prompt.unknown:
        return None
    n = len(prompt.unknown)
    return (
        f"the prompt has {_units(tokenizer, n)} outside the vocabulary ({_quote(prompt.unknown)}); "
        f"{'it was' if n == 1 else 'they were'} read as <unk>"
    )


# ------------------------------------------------------------------ ids -> text, a piece at a time
class TextDecoder:
    """Token ids in, stable text out, a piece at a time, at constant cost per token.

    Decodes only a short window: the ids since the last emitted piece plus the
    piece before it as context (so a word's joining space or a SentencePiece
    word-start mark comes out right), or the tokenizer's `decode_context` ids when
    its spacing looks further back (punct words, whose quotes pair up). A window
    whose text ends in U+FFFD (a character cut mid-way by byte fallback) is held
    back until it is complete. The pieces concatenate to the decoding of all ids
    after the context (for punct words: while a paragraph's quotes lie in the window).
    """

    def __init__(self, tokenizer: TextCodec, context: Sequence[int] = ()) -> None:
        self._tok = tokenizer
        # ids kept before the pending ones: the tokenizer's `decode_context` when its spacing looks further back
        self._keep = max(1, int(getattr(tokenizer, "decode_context", 1)))
        self._ids = list(context[-max(4, self._keep) :])  # window: [0:read) already emitted, [read:] pending
        self._read = len(self._ids)

    def push(self, ids: Iterable[int]) -> str:
        """Add ids; return the text that became stable ('' while a character is incomplete)."""
        self._ids.extend(ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """The held-back rest (it may end in U+FFFD): call once, at the end."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if len(self._ids) == self._read:
            return ""
        before = self._tok.decode(self._ids[: self._read])
        after = self._tok.decode(self._ids)
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        piece = after[len(before) :]
        keep = max(len(self._ids) - self._read, self._keep)
        self._ids = self._ids[-keep:]  # what was pending (and up to `decode_context` ids) becomes the next context
        self._read = len(self._ids)
        return piece

    def copy(self) -> TextDecoder:
        new = copy.copy(self)
        new._ids = list(self._ids)
        return new


class StopMatcher:
    """Cuts a text stream at the first stop string (excluded) or after the n-th line end.

    Text that could be the start of a stop string is held back until it is
    clearly not, so nothing past a stop is ever emitted.
    """

    def __init__(self, stops: Sequence[str] = (), lines: int | None = None) -> None:
        self.stops = tuple(stops)
        self.lines = lines
        self.stopped = False
        self._pending = ""
        self._newlines = 0  # in emitted text

    @property
    def active(self) -> bool:
        return bool(self.stops) or self.lines is not None

    def feed(self, piece: str) -> str:
        """Text in, the part that is safe to emit out; sets `stopped` when the text must end."""
        if self.stopped or not piece:
            return ""
        buf = self._pending + piece
        best: tuple[int, int] | None = None  # (where the stop completes, where to cut)
        for s in self.stops:
            j = buf.find(s)
            if j >= 0 and (best is None or (j + len(s), j) < best):
                best = (j + len(s), j)
        if self.lines is not None:
            j = _nth_index(buf, "\n", self.lines - self._newlines)
            if j >= 0 and (best is None or (j + 1, j + 1) < best):
                best = (j + 1, j + 1)
        if best is not None:
            self.stopped = True
            self._pending = ""
            return buf[: best[1]]
        hold = max((_overlap(buf, s) for s in self.stops), default=0)
        out, self._pending = buf[: len(buf) - hold], buf[len(buf) - hold :]
        self._newlines += out.count("\n")
        return out

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return "" if self.stopped else out

    def copy(self) -> StopMatcher:
        return copy.copy(self)


def _nth_index(text: str, sub: str, n: int) -> int:
    j = -1
    for _ in range(n):
        j = text.find(sub, j + 1)
        if j < 0:
            return -1
    return j


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


class TextTracker:
    """Decoder + stop matcher for one sequence: what a reader sees of its ids so far."""

    def __init__(self, tokenizer: TextCodec, context: Sequence[int], stops: Sequence[str], lines: int | None) -> None:
        self.decoder = TextDecoder(tokenizer, context)
        self.matcher = StopMatcher(stops, lines)

    @property
    def stopped(self) -> bool:
        return self.matcher.stopped

    def push(self, ids: Iterable[int]) -> str:
        return self.matcher.feed(self.decoder.push(ids))

    def finish(self) -> str:
        out = self.matcher.feed(self.decoder.flush())
        return out + self.matcher.flush()

    def copy(self) -> TextTracker:
        new = copy.copy(self)
        new.decoder, new.matcher = self.decoder.copy(), self.matcher.copy()
        return new


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class TokenInfo:
    """One generated token: its text, the model's log-probability of it, and the `top` alternatives
    (text, log-probability), most likely first, when asked for."""

    text: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"token": self.text, "logprob": self.logprob}
        if self.top:
            d["top"] = [{"token": t, "logprob": lp} for t, lp in self.top]
        return d


@dataclass
class Generation:
    """One continuation: its text (the prompt not included), ids, and how likely the model finds it."""

    text: str
    ids: list[int]
    logprob: float  # sum of the model's log-probabilities of `ids`, nats
    finish_reason: str  # "length", "eos", "stop" (a stop string or the line limit)
    score: float | None = None  # beam: logprob / len(ids)^alpha
    tokens: tuple[TokenInfo, ...] = ()  # each token's details, when asked for (logprobs=N)

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        d = {"text": self.text, "tokens": self.num_tokens, "logprob": self.logprob, "finish_reason": self.finish_reason}
        if self.score is not None:
            d["score"] = self.score
        if self.tokens:
            d["logprobs"] = [t.to_dict() for t in self.tokens]
        return d


@dataclass
class Plan:
    """What the text layer hands the loops: prompt, eos rule and text stop rule."""

    prompt: Prompt
    eos_id: int | None
    eos_target: int
    stops: tuple[str, ...]
    text_lines: int | None  # line ends counted in the text (kinds without <eos>)
    banned: tuple[int, ...] = ()  # ids never generated (<unk> unless allowed)
    ending: tuple[int, ...] = ()  # ids that could end the text: masked before min_new_tokens
    ban_ids: tuple[tuple[int, ...], ...] = ()  # the banned strings' id sequences

    @property
    def text_stops(self) -> bool:
        return bool(self.stops) or self.text_lines is not None

    def tracker(self, tokenizer: TextCodec) -> TextTracker:
        return TextTracker(tokenizer, self.prompt.ids, self.stops, self.text_lines)


def make_plan(tokenizer: TextCodec, prompt: str | Prompt, options: DecodingOptions) -> Plan:
    p = prompt if isinstance(prompt, Prompt) else encode_prompt(tokenizer, prompt)
    eos = tokenizer.eos_id
    banned = () if options.allow_unk or tokenizer.unk_id is None else (tokenizer.unk_id,)
    text_lines = options.lines if eos is None else None
    ending = ending_ids(tokenizer, options.stop, text_lines is not None) if options.min_new_tokens else ()
    return Plan(p, eos, options.lines or 1, options.stop, text_lines, banned, ending, ban_ids(tokenizer, options))


def ban_ids(tokenizer: TextCodec, options: DecodingOptions) -> tuple[tuple[int, ...], ...]:
    """Each banned string as the ids that spell it (a char model: one id per character, so exact across tokens;
    other kinds: the tokenizer's own spelling). A string with a unit outside the vocabulary cannot be generated
    while <unk> is masked, and is left out."""
    out = []
    for s in options.ban:
        ids = tuple(tokenizer.encode(normalise_newlines(s)))
        if ids and (options.allow_unk or tokenizer.unk_id is None or tokenizer.unk_id not in ids):
            out.append(ids)
    return tuple(out)


def ending_ids(tokenizer: TextCodec, stops: Sequence[str], line_ends: bool) -> tuple[int, ...]:
    """The ids that could end a text: <eos>, ids holding a line end (when line ends are counted), and ids holding
    the last character of a stop string (no stop can complete without one). Read once, from each id's text."""
    ending = set() if tokenizer.eos_id is None else {tokenizer.eos_id}
    last = {s[-1] for s in stops} | ({"\n"} if line_ends else set())
    if last:
        special = {tokenizer.eos_id, tokenizer.unk_id}
        for i in range(tokenizer.vocab_size):
            if i not in special and any(c in tokenizer.decode([i]) for c in last):
                ending.add(i)
    return tuple(sorted(ending))


def render(
    tokenizer: TextCodec, plan: Plan, ids: list[int], logprob: float, reached_eos: bool, score: float | None = None
) -> Generation:
    """The text of a finished id sequence (decoded once), cut by the stop rule exactly as streaming would cut it."""
    tracker = plan.tracker(tokenizer)
    text = tracker.push(ids)
    text += tracker.finish()
    reason = "eos" if reached_eos else "stop" if tracker.stopped else "length"
    return Generation(text, ids, logprob, reason, score)
