"""Decoding: turning a model and a prompt into text.

    "\n" + prompt ──encode──▶ ids ──one batched forward──▶ (state, logits of the next token)
                                                                  │
        greedy / sample:  pick a token per sequence, step the state, repeat
        beam:             B hypotheses as the batch; every step keeps the B best of
                          the B x V continuations and reorders the state to follow them

The prompt is read after a line end, as evaluation reads every text, so the
log-probabilities here and `charlm perplexity` agree.

Sampling: logits -> temperature -> top-k -> top-p -> softmax -> draw with an
explicit `torch.Generator`. The filters are pure functions that return new
tensors. N samples are one batch of N rows sharing the prompt's state.

Beam search scores a finished hypothesis by sum(log p) / length^alpha (alpha =
`length_penalty`; 0 is the raw sum). Live hypotheses all have the same length,
so they are ranked by the raw sum. A hypothesis finishes at <eos> (kinds that
have one), at a stop string or line limit, or at the length limit; every <eos>
continuation of every live hypothesis is kept as a finished candidate, and the
search stops early only when no live hypothesis can still beat the n-th best
finished one (its bound is sum / max_len^alpha, since log p <= 0), so a beam as
wide as the number of sequences is an exhaustive search.

Whatever the strategy, the reported log-probability is the model's own (before
temperature and filters), in nats. Stop conditions: `max_new_tokens`; <eos> for
kinds with one (the word kind: `lines` line ends, default 1); `lines` line ends
("\\n" in the text) for the others; stop strings (the text ends just before the
first one). Per new token the work is constant: the state carries everything,
and text is decoded over a few-token window.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from charlm.errors import ConfigError, TokenizerError
from charlm.model import State, reorder_state

STRATEGIES = ("greedy", "sample", "beam")

# Cap on the prompt logits held at once (elements, T x V): a long prompt for a big
# vocabulary is read in a few windows with the state carried, not token by token.
_LOGIT_BUDGET = 8 * 1024 * 1024
# Whole-result sampling moves ids to the host at most once per this many steps.
_SYNC_EVERY = 32


class Model(Protocol):
    """What decoding needs from a model (RNNLanguageModel, or a scripted table in tests)."""

    training: bool

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]: ...
    def step(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]: ...
    def train(self, mode: bool = True) -> Any: ...


class Tokenizer(Protocol):
    kind: str
    unk_id: int | None
    eos_id: int | None

    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def unknown_units(self, text: str) -> list[str]: ...


# ------------------------------------------------------------------ options
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
    num_samples: int = 1
    stop: tuple[str, ...] = ()
    lines: int | None = None  # stop after this many line ends (<eos> for the word kind: None = 1)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        _check_int("length", self.max_new_tokens, 1)
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)) or self.temperature < 0:
            raise ConfigError(f"temperature must be a number > 0 (or 0 for greedy), got {self.temperature}")
        if self.top_k is not None:
            _check_int("top-k", self.top_k, 1)
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise ConfigError(f"top-p must be in (0, 1], got {self.top_p}; 0.9 keeps the tokens making up 90% of the probability")
        _check_int("beam width", self.beam_width, 1)
        if not (isinstance(self.length_penalty, (int, float)) and math.isfinite(self.length_penalty)) or self.length_penalty < 0:
            raise ConfigError(f"length penalty must be a number >= 0 (0 ranks by the raw sum of log-probabilities), got {self.length_penalty}")
        if self.n_best is not None:
            _check_int("n-best", self.n_best, 1)
            if self.n_best > self.beam_width:
                raise ConfigError(f"n-best {self.n_best} is more than the beam width {self.beam_width}; raise --beam-width or lower --n-best")
        _check_int("num-samples", self.num_samples, 1)
        if self.lines is not None:
            _check_int("lines", self.lines, 1)
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError("stop strings must be a list of non-empty strings; drop the empty --stop")
        if self.num_samples > 1 and self.effective_strategy != "sample":
            hint = "--n-best for several beam hypotheses" if self.strategy == "beam" else "--strategy sample with a temperature > 0"
            raise ConfigError(f"--num-samples {self.num_samples} needs sampling ({self.effective_strategy} gives one answer); use {hint}")

    @property
    def effective_strategy(self) -> str:
        """`sample` at temperature 0 is greedy."""
        return "greedy" if self.strategy == "sample" and self.temperature == 0 else self.strategy

    def check_vocab(self, vocab_size: int) -> None:
        """The checks that need the model's vocabulary."""
        if self.top_k is not None and self.top_k > vocab_size:
            raise ConfigError(f"top-k {self.top_k} is above the vocabulary size {vocab_size}; use a top-k of at most {vocab_size}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer of at least {low}, got {value!r}")


# ------------------------------------------------------------------ logit filters (pure)
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T: T < 1 sharpens, T > 1 flattens. T must be > 0 (T -> 0 is greedy)."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0 here, got {temperature}; use greedy decoding for 0")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th), set the rest to -inf."""
    if k < 1:
        raise ConfigError(f"top-k must be at least 1, got {k}")
    if k >= logits.size(-1):
        return logits.clone()
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most probable tokens whose probability reaches p.

    A token is dropped when the tokens ranked above it already hold >= p, so the
    most probable token always stays.
    """
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"top-p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits.clone()
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
    probs = sorted_logits.float().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (..., V)
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """The sampling distribution's logits: temperature, then top-k, then top-p (on the tempered distribution)."""
    out = apply_temperature(logits, temperature) if temperature != 1.0 else logits
    if top_k is not None:
        out = top_k_filter(out, top_k)
    if top_p is not None:
        out = top_p_filter(out, top_p)
    return out if out is not logits else logits.clone()


# ------------------------------------------------------------------ choosing a token
def greedy_next(logits: torch.Tensor) -> torch.Tensor:
    """logits (B, V) -> the most likely id of each row (B,); ties go to the lowest id."""
    return logits.argmax(dim=-1)


def sample_next(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V), already filtered -> one id per row (B,), drawn with `generator` (None: torch's global RNG)."""
    probs = logits.float().softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def choose(logits: torch.Tensor, options: DecodingOptions, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding decision: logits (B, V) -> ids (B,) and their log-probability under the model (B,)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, V)
    if options.effective_strategy == "greedy":
        ids = greedy_next(logits)
    else:
        ids = sample_next(filter_logits(logits.float(), options.temperature, options.top_k, options.top_p), generator)
    return ids, logp.gather(1, ids[:, None]).squeeze(1)  # (B,), (B,)


# ------------------------------------------------------------------ prompt
@dataclass(frozen=True)
class Prompt:
    """A prompt as the model reads it: a line-end primer, then the prompt's tokens."""

    text: str
    ids: tuple[int, ...]
    unknown: tuple[str, ...] = ()  # units of the text that became <unk>


def encode_prompt(tokenizer: Tokenizer, text: str) -> Prompt:
    """Text -> a `Prompt`. Units outside the vocabulary become <unk> (listed in `unknown`).

    The model first reads a line end, as `charlm.evaluate` does before every text,
    so a prompt is read as the start of a line (where "ROMEO:" sits in the corpus)
    and an empty prompt starts a fresh line.
    """
    unknown = tuple(tokenizer.unknown_units(text)) if text else ()
    if unknown and tokenizer.unk_id is None:
        raise TokenizerError(f"the prompt has {_units(tokenizer, len(unknown))} this checkpoint cannot represent ({_quote(unknown)}); remove them")
    ids = _primer(tokenizer) + (tuple(tokenizer.encode(text)) if text else ())
    if not ids:
        raise ConfigError(f"this {tokenizer.kind} tokenizer has no line end to start from; give a prompt")
    return Prompt(text, ids, unknown)


def _primer(tokenizer: Tokenizer) -> tuple[int, ...]:
    """The line-end token read before the prompt; the same rule as `charlm.evaluate.context_id`:
    the text "\n" if it is one known token, else <eos>, else <unk>."""
    ids = tuple(tokenizer.encode("\n"))
    if len(ids) == 1 and ids[0] != tokenizer.unk_id:
        return ids
    if tokenizer.eos_id is not None:
        return (tokenizer.eos_id,)
    return (tokenizer.unk_id,) if tokenizer.unk_id is not None else ()


def _units(tokenizer: Tokenizer, n: int) -> str:
    noun = {"char": "character", "word": "word"}.get(tokenizer.kind, "piece")
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _quote(units: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(u) for u in units[:limit])
    return shown + (f" and {len(units) - limit} more" if len(units) > limit else "")


def describe_unknown(tokenizer: Tokenizer, prompt: Prompt) -> str | None:
    """A one-line warning about the prompt's out-of-vocabulary units, or None."""
    if not prompt.unknown:
        return None
    n = len(prompt.unknown)
    return f"the prompt has {_units(tokenizer, n)} outside the vocabulary ({_quote(prompt.unknown)}); {'it was' if n == 1 else 'they were'} read as <unk>"


def _device(model: Any) -> torch.device:
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def warm_up(model: Model, ids: Sequence[int], device: torch.device | None = None) -> tuple[torch.Tensor, State]:
    """Read the prompt in one batched forward pass: -> logits of the next token (1, V), state (batch 1).

    Only a prompt with more than ~8M logits (T x V) is read in several windows, state carried.
    """
    if not ids:
        raise ConfigError("the prompt has no tokens; give a prompt")
    x = torch.tensor([list(ids)], dtype=torch.long, device=device or _device(model))  # (1, T)
    state: State | None = None
    logits = None
    vocab = getattr(getattr(model, "config", None), "vocab_size", 1)
    window = max(1, _LOGIT_BUDGET // max(1, vocab))
    for i in range(0, x.size(1), window):
        logits, state = model(x[:, i : i + window], state)  # (1, t, V)
    assert logits is not None and state is not None
    return logits[:, -1], state  # (1, V)


# ------------------------------------------------------------------ ids -> text, a piece at a time
class TextDecoder:
    """Token ids in, stable text out, a piece at a time, at constant cost per token.

    Decodes only a short window: the ids since the last emitted piece plus the
    piece before it as context (so a word's joining space or a SentencePiece
    word-start mark comes out right). A window whose text ends in U+FFFD (a
    character cut mid-way by byte fallback) is held back until it is complete.
    The pieces concatenate to the decoding of all ids after the context.
    """

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = ()) -> None:
        self._tok = tokenizer
        self._ids = list(context[-4:])  # window: [0:read) already emitted, [read:] pending
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
        self._ids = self._ids[self._read :]  # what was pending becomes the next context
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


class _TextTracker:
    """Decoder + stop matcher for one sequence: what a reader sees of its ids so far."""

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int], stops: Sequence[str], lines: int | None) -> None:
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

    def copy(self) -> _TextTracker:
        new = copy.copy(self)
        new.decoder, new.matcher = self.decoder.copy(), self.matcher.copy()
        return new


# ------------------------------------------------------------------ results
@dataclass
class Generation:
    """One continuation: its text (the prompt not included), ids, and how likely the model finds it."""

    text: str
    ids: list[int]
    logprob: float  # sum of the model's log-probabilities of `ids`, nats
    finish_reason: str  # "length", "eos", "stop" (a stop string or the line limit)
    score: float | None = None  # beam: logprob / len(ids)^alpha

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        d = {"text": self.text, "tokens": self.num_tokens, "logprob": self.logprob, "finish_reason": self.finish_reason}
        if self.score is not None:
            d["score"] = self.score
        return d


@dataclass
class _Plan:
    """What the text layer hands the loops: prompt, eos rule and text stop rule."""

    prompt: Prompt
    eos_id: int | None
    eos_target: int
    stops: tuple[str, ...]
    text_lines: int | None  # line ends counted in the text (kinds without <eos>)

    @property
    def text_stops(self) -> bool:
        return bool(self.stops) or self.text_lines is not None

    def tracker(self, tokenizer: Tokenizer) -> _TextTracker:
        return _TextTracker(tokenizer, self.prompt.ids, self.stops, self.text_lines)


def _plan(tokenizer: Tokenizer, prompt: str | Prompt, options: DecodingOptions) -> _Plan:
    p = prompt if isinstance(prompt, Prompt) else encode_prompt(tokenizer, prompt)
    eos = tokenizer.eos_id
    return _Plan(p, eos, options.lines or 1, options.stop, options.lines if eos is None else None)


def _render(tokenizer: Tokenizer, plan: _Plan, ids: list[int], logprob: float, reached_eos: bool, score: float | None = None) -> Generation:
    """The text of a finished id sequence, cut by the stop rule exactly as streaming would cut it."""
    tracker = plan.tracker(tokenizer)
    text = tracker.push(ids)
    text += tracker.finish()
    reason = "eos" if reached_eos else "stop" if tracker.stopped else "length"
    return Generation(text, ids, logprob, reason, score)


# ------------------------------------------------------------------ sampling and greedy
def token_steps(
    model: Model, logits: torch.Tensor, state: State, options: DecodingOptions, generator: torch.Generator | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The device loop: yields (ids (B,), log-probs (B,)) for up to `max_new_tokens` steps.

    No host sync: the consumer decides when to look at the ids. The state is stepped
    only when the consumer asks for the next token.
    """
    for i in range(options.max_new_tokens):
        ids, logp = choose(logits, options, generator)
        yield ids, logp
        if i + 1 < options.max_new_tokens:
            logits, state = model.step(ids, state)  # (B, V)


@dataclass
class _Row:
    """Host bookkeeping of one sampled sequence."""

    ids: list[int] = field(default_factory=list)
    logprob: float = 0.0
    eos_seen: int = 0
    done: bool = False
    reached_eos: bool = False


def _accept(row: _Row, token: int, logp: float, plan: _Plan, tracker: _TextTracker | None, limit: int) -> str:
    """Record one token; return the text it releases (only when a tracker is used); mark the row done."""
    row.ids.append(token)
    row.logprob += logp
    piece = tracker.push([token]) if tracker is not None else ""
    if plan.eos_id is not None and token == plan.eos_id:
        row.eos_seen += 1
        if row.eos_seen >= plan.eos_target:
            row.done = row.reached_eos = True
    if (tracker is not None and tracker.stopped) or len(row.ids) >= limit:
        row.done = True
    return piece


def _sample_batch(model: Model, tokenizer: Tokenizer, plan: _Plan, options: DecodingOptions, generator: torch.Generator | None) -> list[Generation]:
    n = options.num_samples
    logits, state = warm_up(model, plan.prompt.ids)
    logits = logits.expand(n, -1)  # (N, V)
    state = reorder_state(state, torch.zeros(n, dtype=torch.long, device=logits.device))  # each (L, N, H)
    rows = [_Row() for _ in range(n)]
    trackers = [plan.tracker(tokenizer) for _ in range(n)] if plan.text_stops else None
    chunk: list[tuple[torch.Tensor, torch.Tensor]] = []
    next_sync = 1  # syncs at steps 1, 2, 4, ..., then every _SYNC_EVERY: short texts waste few steps
    steps = token_steps(model, logits, state, options, generator)
    for t, step in enumerate(steps, 1):
        chunk.append(step)
        if t < next_sync and t < options.max_new_tokens:
            continue
        next_sync = t + min(t, _SYNC_EVERY)
        ids = torch.stack([c[0] for c in chunk], 1).tolist()  # (N, c): one host sync per chunk
        lps = torch.stack([c[1] for c in chunk], 1).double().tolist()
        chunk = []
        for i, row in enumerate(rows):
            for token, lp in zip(ids[i], lps[i]):
                if row.done:
                    break
                _accept(row, token, lp, plan, trackers[i] if trackers else None, options.max_new_tokens)
        if all(r.done for r in rows):
            break
    steps.close()
    return [_render(tokenizer, plan, r.ids, r.logprob, r.reached_eos) for r in rows]


class TextStream:
    """Iterate to get text pieces as they are generated; `result` is set once it is exhausted."""

    def __init__(self, model: Model, tokenizer: Tokenizer, plan: _Plan, options: DecodingOptions, generator: torch.Generator | None) -> None:
        self.prompt = plan.prompt
        self.result: Generation | None = None
        self._gen = self._run(model, tokenizer, plan, options, generator)

    def __iter__(self) -> Iterator[str]:
        return self._gen

    def _run(self, model: Model, tokenizer: Tokenizer, plan: _Plan, options: DecodingOptions, generator: torch.Generator | None) -> Iterator[str]:
        was_training = model.training
        model.train(False)
        try:
            logits, state = warm_up(model, plan.prompt.ids)
            row, tracker = _Row(), plan.tracker(tokenizer)
            text = []
            for ids, logp in token_steps(model, logits, state, options, generator):
                piece = _accept(row, int(ids[0]), float(logp[0]), plan, tracker, options.max_new_tokens)  # one sync per token
                if piece:
                    text.append(piece)
                    yield piece
                if row.done:
                    break
            tail = tracker.finish()
            if tail:
                text.append(tail)
                yield tail
            reason = "eos" if row.reached_eos else "stop" if tracker.stopped else "length"
            self.result = Generation("".join(text), row.ids, row.logprob, reason)
        finally:
            model.train(was_training)


def stream(model: Model, tokenizer: Tokenizer, prompt: str | Prompt, options: DecodingOptions, generator: torch.Generator | None = None) -> TextStream:
    """Generate one continuation (greedy or sample), yielding text pieces as they are produced.

        s = stream(model, tok, "ROMEO:", DecodingOptions(max_new_tokens=200), torch.Generator().manual_seed(1))
        for piece in s: print(piece, end="", flush=True)
        s.result.logprob
    """
    if options.effective_strategy == "beam":
        raise ConfigError("beam search cannot stream (hypotheses change until the end); use generate() or greedy/sample")
    if options.num_samples != 1:
        raise ConfigError("streaming produces one sequence; use generate() for several samples")
    options.check_vocab(tokenizer.vocab_size)
    return TextStream(model, tokenizer, _plan(tokenizer, prompt, options), options, generator)


def generate(model: Model, tokenizer: Tokenizer, prompt: str | Prompt, options: DecodingOptions, generator: torch.Generator | None = None) -> list[Generation]:
    """Whole results: `num_samples` samples (one batch), one greedy text, or the n best beam hypotheses (best first)."""
    options.check_vocab(tokenizer.vocab_size)
    plan = _plan(tokenizer, prompt, options)
    was_training = model.training
    model.train(False)
    try:
        with torch.no_grad():
            if options.effective_strategy != "beam":
                return _sample_batch(model, tokenizer, plan, options, generator)
            logits, state = warm_up(model, plan.prompt.ids)
            finisher = _BeamTextFinisher(tokenizer, plan) if plan.text_stops else None
            hyps = beam_search(
                model,
                logits,
                state,
                width=options.beam_width,
                max_new_tokens=options.max_new_tokens,
                length_penalty=options.length_penalty,
                n_best=options.n_best,
                eos_id=plan.eos_id,
                eos_target=plan.eos_target,
                finisher=finisher,
            )
            return [_render(tokenizer, plan, h.ids, h.logprob, h.reached_eos, h.score) for h in hyps]
    finally:
        model.train(was_training)


# ------------------------------------------------------------------ beam search
@dataclass
class Hypothesis:
    """A finished beam hypothesis: generated ids, sum of log-probs, normalised score."""

    ids: list[int]
    logprob: float
    score: float
    reached_eos: bool


class BeamFinisher(Protocol):
    """Host-side stop rule for beam search (stop strings): sees each step's candidates."""

    def start(self, width: int) -> None: ...
    def check(self, parents: list[int], tokens: list[int], alive: list[bool]) -> list[bool]: ...
    def commit(self, chosen: list[int]) -> None: ...


class _BeamTextFinisher:
    """Stop strings / line limit for beam search: one text tracker per live hypothesis."""

    def __init__(self, tokenizer: Tokenizer, plan: _Plan) -> None:
        self._tok, self._plan = tokenizer, plan
        self._live: list[_TextTracker | None] = []
        self._cands: list[_TextTracker | None] = []

    def start(self, width: int) -> None:
        self._live = [self._plan.tracker(self._tok)] * width  # every slot starts from the prompt

    def check(self, parents: list[int], tokens: list[int], alive: list[bool]) -> list[bool]:
        self._cands = []
        for p, t, a in zip(parents, tokens, alive):
            parent = self._live[p]
            if not a or parent is None:  # a dead (-inf) candidate: nothing to read
                self._cands.append(None)
                continue
            tr = parent.copy()
            tr.push([t])
            self._cands.append(tr)
        return [tr is not None and tr.stopped for tr in self._cands]

    def commit(self, chosen: list[int]) -> None:
        self._live = [self._cands[i] for i in chosen]


def length_normalised(logprob: Any, length: Any, alpha: float) -> Any:
    """Beam score: sum(log p) / length^alpha (alpha = 0: the raw sum)."""
    if alpha == 0:
        return logprob
    return logprob / (length**alpha)


@torch.no_grad()
def beam_search(
    model: Model,
    logits: torch.Tensor,
    state: State,
    *,
    width: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    n_best: int | None = None,
    eos_id: int | None = None,
    eos_target: int = 1,
    finisher: BeamFinisher | None = None,
) -> list[Hypothesis]:
    """The n best hypotheses (best first) continuing from `state`, whose next-token logits are `logits` (1, V).

    Beams are the batch: scores (B,), state (L, B, H), reordered after each step to
    follow the surviving parents; unused slots hold score -inf (at the start only
    one hypothesis exists). Each step ranks the B x V continuations and takes the
    best 2B: those that end a hypothesis (its `eos_target`-th <eos>, or a stop the
    `finisher` reports) are kept as finished when ranked within the first B; the
    first B of the others live on. At `max_new_tokens` every continuation is complete.
    """
    B, V = width, logits.size(-1)
    n_best = n_best or width
    alpha = float(length_penalty)
    device = logits.device
    neg_inf = torch.tensor(float("-inf"), device=device)
    scores = torch.full((B,), float("-inf"), device=device)  # (B,) sum of log p of each live hypothesis
    scores[0] = 0.0
    state = reorder_state(state, torch.zeros(B, dtype=torch.long, device=device))  # each (L, B, H)
    logits = logits.expand(B, V)
    eos_seen = torch.zeros(B, dtype=torch.long, device=device)  # (B,) <eos> tokens in each hypothesis
    k = min(2 * B, B * V)
    rank = torch.arange(k, device=device)
    hist_tok: list[torch.Tensor] = []  # step t-1 -> (B,) last token of each slot
    hist_parent: list[torch.Tensor] = []  # step t-1 -> (B,) slot it continued
    fin: list[_Finished] = []
    best_fin = torch.empty(0, device=device)  # the n best normalised finished scores so far
    can_finish_early = eos_id is not None or finisher is not None
    bound_den = float(max_new_tokens) ** alpha
    if finisher is not None:
        finisher.start(B)
    for t in range(1, max_new_tokens + 1):
        cand = (scores[:, None] + F.log_softmax(logits.float(), dim=-1)).reshape(-1)  # (B * V,)
        last = t == max_new_tokens
        top, idx = cand.topk(min(n_best, B * V) if last else k)  # best first
        parent, token = idx // V, idx % V
        at_eos = (token == eos_id) & (eos_seen[parent] == eos_target - 1) if eos_id is not None else torch.zeros_like(token, dtype=torch.bool)
        if last:  # every continuation is complete; same length, so the raw sum ranks them
            fin.append(_Finished(top, t, parent, token, at_eos))
            break
        ends = at_eos
        if finisher is not None:  # stop strings need the text: one host sync per step
            stopped = finisher.check(parent.tolist(), token.tolist(), torch.isfinite(top).tolist())
            ends = ends | torch.tensor(stopped, device=device)
        fin.append(_Finished(torch.where(ends & (rank < B), top, neg_inf), t, parent, token, at_eos))
        keep = torch.sort(ends.to(torch.uint8), stable=True).indices[:B]  # the others first, in rank order
        scores = torch.where(ends[keep], neg_inf, top[keep])  # (B,)
        parent, token = parent[keep], token[keep]
        if finisher is not None:
            finisher.commit(keep.tolist())
        hist_tok.append(token)
        hist_parent.append(parent)
        state = reorder_state(state, parent)
        if eos_id is not None:
            eos_seen = eos_seen[parent] + (token == eos_id).long()
        if can_finish_early:
            best_fin = torch.cat([best_fin, length_normalised(fin[-1].raw, t, alpha)])
            best_fin = best_fin.topk(min(n_best, best_fin.numel())).values
            # No live hypothesis can beat the n-th best finished one: stop (exact, see the module doc).
            if best_fin.numel() == n_best and bool(scores.max() / bound_den <= best_fin[-1]):
                break
        logits, state = model.step(token, state)  # (B, V)
    return _best_hypotheses(fin, hist_tok, hist_parent, n_best, alpha)


@dataclass
class _Finished:
    """Finished candidates of one step (-inf where a slot holds none)."""

    raw: torch.Tensor  # (m,) sum of log p
    step: int  # their length
    parent: torch.Tensor  # (m,) live slot after step - 1 that they continue
    token: torch.Tensor  # (m,) their last token
    eos: torch.Tensor  # (m,) bool: ended by <eos>


def _best_hypotheses(fin: list[_Finished], hist_tok: list[torch.Tensor], hist_parent: list[torch.Tensor], n_best: int, alpha: float) -> list[Hypothesis]:
    raw = torch.cat([f.raw for f in fin])
    lengths = torch.cat([torch.full_like(f.raw, f.step) for f in fin])
    norm = length_normalised(raw, lengths, alpha)
    norm = torch.where(torch.isfinite(raw), norm, torch.tensor(float("-inf"), device=norm.device))
    k = min(n_best, int(torch.isfinite(norm).sum()))
    if k == 0:
        return []
    order = norm.topk(k).indices.tolist()
    # a few host transfers, once: back-pointers and the finished candidates
    toks = torch.stack(hist_tok).tolist() if hist_tok else []
    parents = torch.stack(hist_parent).tolist() if hist_parent else []
    parent_l = torch.cat([f.parent for f in fin]).tolist()
    token_l = torch.cat([f.token for f in fin]).tolist()
    eos_l = torch.cat([f.eos for f in fin]).tolist()
    len_l, raw_l, norm_l = lengths.long().tolist(), raw.tolist(), norm.tolist()
    out = []
    for j in order:
        slot, ids = parent_l[j], [token_l[j]]
        for s in range(len_l[j] - 2, -1, -1):  # walk back from the parent, the live slot after step t-1
            ids.append(toks[s][slot])
            slot = parents[s][slot]
        out.append(Hypothesis(ids[::-1], raw_l[j], norm_l[j], eos_l[j]))
    return out
