"""The decoding loops: read the prompt, then pick tokens (greedy, sampling) or search (beam).

    prompt ids ──one batched forward──▶ (logits of the next token, state)
        greedy / sample:  pick a token per sequence, step the state, repeat
        beam:             see charlm.sampling.beam

N samples are one batch of N rows sharing the prompt's state. Per new token the
work is constant and stays on the device: ids go to the host in chunks (at
steps 1, 2, 4, ... then every 32), and only a stop rule that needs the text
(stop strings, a char model's line count) makes the host read every row.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from charlm.errors import ConfigError
from charlm.models import LOGIT_BUDGET, State, reorder_state
from charlm.runtime import eval_mode, memory
from charlm.sampling.beam import BeamTextFinisher, beam_search
from charlm.sampling.controls import HistoryControls
from charlm.sampling.filters import choose
from charlm.sampling.options import DecodingOptions
from charlm.sampling.protocols import DecodingModel, TextCodec
from charlm.sampling.rng import RowRandom, seed_of
from charlm.sampling.text import Generation, Plan, Prompt, TextTracker, make_plan, render

SYNC_EVERY = 32  # whole-result sampling moves ids to the host at most once per this many steps


@torch.no_grad()
def warm_up(model: DecodingModel, ids: Sequence[int], device: torch.device | None = None) -> tuple[torch.Tensor, State]:
    """Read the prompt in one batched forward pass: -> logits of the next token (1, V), state (batch 1).

    Only a prompt with more than LOGIT_BUDGET logits (T x V) is read in several windows, state carried.
    """
    if not ids:
        raise ConfigError("the prompt has no tokens; give a prompt")
    x = torch.tensor([list(ids)], dtype=torch.long, device=device or model.device)  # (1, T)
    state: State | None = None
    logits = None
    window = max(1, LOGIT_BUDGET // max(1, model.vocab_size))
    for i in range(0, x.size(1), window):
        out = model(x[:, i : i + window], state)
        logits, state = out.logits, out.state  # (1, t, V)
    assert logits is not None and state is not None
    return logits[:, -1], state  # (1, V)


def token_steps(
    model: DecodingModel,
    logits: torch.Tensor,
    state: State,
    options: DecodingOptions,
    rng: RowRandom | None,
    banned: Sequence[int] = (),
    ending: Sequence[int] = (),
    sequences: Sequence[Sequence[int]] = (),
) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    """The device loop: yields (ids (B,), log-probs (B,)) for up to `max_new_tokens` steps.

    No host sync: the consumer decides when to look at the ids. The state is stepped
    only when the consumer asks for the next token. `ending` ids are masked before
    `min_new_tokens`, id `sequences` never completed; the history filters exist only when one of them is on.
    """
    controls = HistoryControls.make(options, ending, logits.size(0), logits.size(-1), logits.device, sequences)
    for i in range(options.max_new_tokens):
        ids, logp = choose(logits, options, rng, banned, controls)
        if controls is not None:
            controls.record(ids)
        yield ids, logp
        if i + 1 < options.max_new_tokens:
            logits, state = model.step(ids, state)  # (B, V)


def _plan_steps(
    model: DecodingModel,
    logits: torch.Tensor,
    state: State,
    options: DecodingOptions,
    rng: RowRandom | None,
    plan: Plan,
) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    """`token_steps` with the plan's masks: banned ids, ending ids, banned strings' id sequences."""
    return token_steps(model, logits, state, options, rng, plan.banned, plan.ending, plan.ban_ids)


def _sync_points() -> Iterator[int]:
    """Steps after which the host looks at the ids: 1, 2, 4, ..., 32, 64, 96, ...: short texts waste few steps."""
    t = 1
    while True:
        yield t
        t += min(t, SYNC_EVERY)


# ------------------------------------------------------------------ a batch without text stops: tensor-shaped
def _sample_tensor(
    model: DecodingModel, tokenizer: TextCodec, plan: Plan, options: DecodingOptions, rng: RowRandom
) -> list[Generation]:
    """N samples whose only stop is the length or the n-th <eos>: counted on the device, decoded once at the end."""
    n, limit = options.num_samples, options.max_new_tokens
    logits, state = _batch_start(model, plan, n)
    device = logits.device
    ids_seen: list[torch.Tensor] = []
    lps_seen: list[torch.Tensor] = []
    eos_count = torch.zeros(n, dtype=torch.long, device=device)
    ended = torch.zeros(n, dtype=torch.bool, device=device)  # reached the eos target
    length = torch.full((n,), limit, dtype=torch.long, device=device)  # tokens each row keeps
    sync = _sync_points()
    next_sync = next(sync)
    for t, (ids, lp) in enumerate(_plan_steps(model, logits, state, options, rng, plan), 1):
        ids_seen.append(ids)
        lps_seen.append(lp)
        if plan.eos_id is None:
            continue
        eos_count += (ids == plan.eos_id).long()
        newly = (eos_count == plan.eos_target) & ~ended
        length = torch.where(newly, t, length)
        ended |= newly
        if t == next_sync:
            next_sync = next(sync)
            if bool(ended.all()):  # one host sync per chunk
                break
    ids_all = torch.stack(ids_seen, 1)  # (N, T)
    rows, lengths = ids_all.tolist(), length.tolist()
    lps = torch.stack(lps_seen, 1).double().tolist()  # (N, T): summed exactly, as every decoding path sums
    return [
        render(tokenizer, plan, row[:k], math.fsum(lp[:k]), reached)
        for row, k, lp, reached in zip(rows, lengths, lps, ended.tolist())
    ]


def _batch_start(model: DecodingModel, plan: Plan, n: int) -> tuple[torch.Tensor, State]:
    logits, state = warm_up(model, plan.prompt.ids)
    index = torch.zeros(n, dtype=torch.long, device=logits.device)
    return logits.expand(n, -1), reorder_state(state, index)  # (N, V), each (L, N, H)


# ------------------------------------------------------------------ a batch with text stops: rows read on the host
@dataclass
class RowText:
    """Host bookkeeping of one sequence whose stop rule reads its text."""

    tracker: TextTracker | None
    ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    eos_seen: int = 0
    done: bool = False
    reached_eos: bool = False

    def accept(self, token: int, logp: float, plan: Plan, limit: int) -> str:
        """Record one token; return the text it releases; mark the row done at its stop."""
        self.ids.append(token)
        self.logprobs.append(logp)
        piece = self.tracker.push([token]) if self.tracker is not None else ""
        if piece:
            self.text.append(piece)
        if plan.eos_id is not None and token == plan.eos_id:
            self.eos_seen += 1
            if self.eos_seen >= plan.eos_target:
                self.done = self.reached_eos = True
        if (self.tracker is not None and self.tracker.stopped) or len(self.ids) >= limit:
            self.done = True
        return piece

    def result(self) -> Generation:
        assert self.tracker is not None
        tail = self.tracker.finish()
        reason = "eos" if self.reached_eos else "stop" if self.tracker.stopped else "length"
        return Generation("".join(self.text) + tail, self.ids, self.logprob, reason)

    @property
    def logprob(self) -> float:
        """The exact sum of the tokens' log-probabilities (the same figure whichever path decoded them)."""
        return math.fsum(self.logprobs)


def _sample_rows(
    model: DecodingModel, tokenizer: TextCodec, plan: Plan, options: DecodingOptions, rng: RowRandom
) -> list[Generation]:
    logits, state = _batch_start(model, plan, options.num_samples)
    rows = [RowText(plan.tracker(tokenizer)) for _ in range(options.num_samples)]
    chunk: list[tuple[torch.Tensor, torch.Tensor]] = []
    sync = _sync_points()
    next_sync = next(sync)
    steps = _plan_steps(model, logits, state, options, rng, plan)
    for t, step in enumerate(steps, 1):
        chunk.append(step)
        if t < next_sync and t < options.max_new_tokens:
            continue
        next_sync = next(sync)
        ids = torch.stack([c[0] for c in chunk], 1).tolist()  # (N, c): one host sync per chunk
        lps = torch.stack([c[1] for c in chunk], 1).double().tolist()
        chunk = []
        for row, row_ids, row_lps in zip(rows, ids, lps):
            for token, lp in zip(row_ids, row_lps):
                if row.done:
                    break
                row.accept(token, lp, plan, options.max_new_tokens)
        if all(r.done for r in rows):
            break
    steps.close()
    return [r.result() for r in rows]


# ------------------------------------------------------------------ one sequence, streamed
class TextStream:
    """Iterate to get text pieces as they are generated; `result` is set once it is exhausted.

    The model is in eval mode while the stream runs and gets its mode back when
    the stream ends, is closed, or is used as a context manager and left
    (say by Ctrl-C while the caller prints a piece).
    """

    def __init__(
        self,
        model: DecodingModel,
        tokenizer: TextCodec,
        plan: Plan,
        options: DecodingOptions,
        rng: RowRandom,
    ) -> None:
        self.prompt = plan.prompt
        self.result: Generation | None = None
        self._gen = self._run(model, RowText(plan.tracker(tokenizer)), plan, options, rng)

    def __iter__(self) -> Iterator[str]:
        return self._gen

    def close(self) -> None:
        self._gen.close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(
        self, model: DecodingModel, row: RowText, plan: Plan, options: DecodingOptions, rng: RowRandom
    ) -> Generator[str, None, None]:
        # No torch.no_grad() here: grad mode is per thread, so it would leak to the caller at every
        # yield. warm_up and the model's step run without gradients themselves.
        with eval_mode(model):  # type: ignore[arg-type]
            logits, state = warm_up(model, plan.prompt.ids)
            for ids, logp in _plan_steps(model, logits, state, options, rng, plan):
                piece = row.accept(int(ids[0]), float(logp[0]), plan, options.max_new_tokens)  # one sync per token
                if piece:
                    yield piece
                if row.done:
                    break
            emitted = len("".join(row.text))
            self.result = row.result()
            if len(self.result.text) > emitted:
                yield self.result.text[emitted:]  # what the decoder or the stop matcher held back


def stream(
    model: DecodingModel,
    tokenizer: TextCodec,
    prompt: str | Prompt,
    options: DecodingOptions,
    seed: torch.Generator | int | None = None,
) -> TextStream:
    """Generate one continuation (greedy or sample), yielding text pieces as they are produced.

    `seed`: an int (the same seed gives the same text as `generate`), a torch.Generator to draw a seed from,
    or None (a seed drawn from torch's global generator).

    with stream(model, tok, "ROMEO:", DecodingOptions(max_new_tokens=200), seed=1) as s:
        for piece in s:
            print(piece, end="", flush=True)
    s.result.logprob
    """
    if options.effective_strategy == "beam":
        raise ConfigError(
            "beam search cannot stream (hypotheses change until the end); use generate() or greedy/sample"
        )
    if options.num_samples != 1:
        raise ConfigError("streaming produces one sequence; use generate() for several samples")
    options.check_vocab(tokenizer.vocab_size)
    rng = RowRandom.seeded(seed_of(seed), 1, model.device)
    return TextStream(model, tokenizer, make_plan(tokenizer, prompt, options), options, rng)


def generate(
    model: DecodingModel,
    tokenizer: TextCodec,
    prompt: str | Prompt,
    options: DecodingOptions,
    seed: torch.Generator | int | None = None,
) -> list[Generation]:
    """Whole results: `num_samples` samples (one batch), one greedy text, or the n best beam hypotheses (best first).

    Sample i draws from the random stream of (seed, i) (`charlm.sampling.rng`), whatever else runs beside it.
    `seed` as for `stream`."""
    options.check_vocab(tokenizer.vocab_size)
    check_memory(model, tokenizer.vocab_size, options)
    plan = make_plan(tokenizer, prompt, options)
    with eval_mode(model), torch.no_grad():  # type: ignore[arg-type]
        if options.effective_strategy != "beam":
            sample = _sample_rows if plan.text_stops else _sample_tensor
            rng = RowRandom.seeded(seed_of(seed), options.num_samples, model.device)
            return sample(model, tokenizer, plan, options, rng)
        logits, state = warm_up(model, plan.prompt.ids)
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
            finisher=BeamTextFinisher(tokenizer, plan) if plan.text_stops else None,
            exact=options.exact_beam,
            banned=plan.banned,
            controls=HistoryControls.make(
                options, plan.ending, options.beam_width, logits.size(-1), logits.device, plan.ban_ids
            ),
        )
        return [render(tokenizer, plan, h.ids, h.logprob, h.reached_eos, h.score) for h in hyps]


def check_memory(model: DecodingModel, vocab: int, options: DecodingOptions) -> None:
    """Refuse a whole-result request whose history cannot fit: it grows with the rows (--num-samples, or the
    beam's slots) times --length. Streaming one sequence keeps only its own ids and text (tens of bytes a
    token, so MAX_NEW_TOKENS bounds it at tens of MB) and is not checked."""
    state = model.state_floats
    length = options.max_new_tokens
    if options.effective_strategy == "beam":
        rows, per_token = options.beam_width, memory.BEAM_TOKEN_BYTES
        doing = f"a beam search {rows} wide over up to {length:,} tokens"
        fix = "use a smaller --beam-width or --length"
    else:
        rows, per_token = options.num_samples, memory.SAMPLE_TOKEN_BYTES
        doing = f"drawing {rows:,} sample{'s' if rows != 1 else ''} of up to {length:,} tokens"
        fix = "use fewer --num-samples or a smaller --length"
    need = memory.decoding_bytes(rows, length, vocab, state, per_token)
    memory.require(need, model.device, doing, fix)
