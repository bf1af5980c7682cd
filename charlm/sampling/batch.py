"""Many sequences decoded as one batch that rows join and leave: `DecodeBatch` (continuous batching).

    add(prompt, options, seed)  read the prompt alone (batch 1, as `generate` reads it); the row joins the
                                batch at the next step, its state stacked under the others'
    step()                      one model step for every live row, then one decision per row, each with its
                                own options and its own random stream; rows that end leave the batch

A recurrent model's state has a fixed size per sequence, so rows of different prompts, lengths and ages sit
side by side: `charlm generate --prompts` runs hundreds of prompts this way and `charlm serve` admits each
new request at the next step. Rows whose options decide alike (strategy, temperature, filters, controls)
form a group and are decided as one tensor; a step costs one pass per group, never one per row.

A row draws from the random stream of (seed, sample) (`charlm.sampling.rng`), counted by its own steps, so
its text is the text `generate(model, tokenizer, prompt, options, seed)` gives for sample `sample`,
whatever shares the batch. The one caveat is floating point: a matrix product over B rows may round
differently from one over a single row (the CPU's kernels block rows differently), and a draw that lands
within that rounding of a boundary between two tokens can then differ. benchmarks/bench_prompts.py
counts how often that happens (it did not, over 256 prompts of 200 tokens, on the machines measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from charlm.errors import ConfigError
from charlm.models import LOGIT_BUDGET, State
from charlm.runtime import eval_mode
from charlm.sampling.controls import HistoryControls
from charlm.sampling.decode import RowText, warm_up
from charlm.sampling.filters import ban, filter_logits, greedy_next, sample_next
from charlm.sampling.options import DecodingOptions
from charlm.sampling.protocols import DecodingModel, TextCodec
from charlm.sampling.rng import BLOCK, row_key, uniforms
from charlm.sampling.text import Generation, Plan, Prompt, TokenInfo, make_plan, render

MAX_LOGPROBS = 20  # alternatives reported per token at most (OpenAI's completions allow 5; 20 is plenty)


@dataclass
class RowEvent:
    """What one step did for one row: `piece`, the text it released ('' while held back by a stop string
    or an incomplete character), `tokens` chosen (one per step; with details when asked), and once the row
    ends, `done` and its `result`."""

    row: int
    piece: str
    tokens: tuple[TokenInfo, ...] = ()
    done: bool = False
    result: Generation | None = None
    # keep_state rows, once done: the next-token logits (1, V) and state after the row's last token
    carry: tuple[torch.Tensor, State] | None = None


@dataclass
class _Live:
    """Host bookkeeping of one row."""

    id: int
    plan: Plan
    options: DecodingOptions
    text: RowText
    logprobs: int
    group: tuple[Any, ...]
    details: list[TokenInfo] = field(default_factory=list)
    keep_state: bool = False


@dataclass
class _Pending:
    """A row waiting for the next step: its prompt is read then, with the other rows queued by then."""

    live: _Live
    key: torch.Tensor  # (1, 2)
    start: tuple[torch.Tensor, State] | None  # (logits (1, V), state): given, or set once the prompt is read


@dataclass
class _Group:
    """Rows whose options decide alike: their positions in the batch and their history controls."""

    options: DecodingOptions
    plan: Plan
    members: list[int]  # row ids, in batch order
    controls: HistoryControls | None


def _signature(options: DecodingOptions, plan: Plan) -> tuple[Any, ...]:
    """What a decision depends on besides the logits: rows with equal signatures are decided together."""
    o = options
    return (
        o.effective_strategy,
        o.temperature,
        o.top_k,
        o.top_p,
        o.min_p,
        o.typical_p,
        o.repetition_penalty,
        o.presence_penalty,
        o.frequency_penalty,
        o.no_repeat_ngram_size,
        o.min_new_tokens,
        tuple(id(f) for f in o.logits_processors),
        plan.banned,
        plan.ending,
        plan.ban_ids,
    )


class DecodeBatch:
    """Rows decoded together; see the module's docstring. Not thread-safe: one thread calls add/step/cancel."""

    def __init__(self, model: DecodingModel, tokenizer: TextCodec, max_rows: int = 256) -> None:
        if max_rows < 1:
            raise ConfigError(f"max_rows must be at least 1, got {max_rows}")
        self.model, self.tokenizer, self.max_rows = model, tokenizer, max_rows
        self._next_id = 0
        self._rows: list[_Live] = []  # in batch order
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._state: State | None = None  # each (L, B, H)
        self._logits: torch.Tensor | None = None  # (B, V): each row's next-token logits
        self._keys: torch.Tensor | None = None  # (B, 2)
        self._counts: torch.Tensor | None = None  # (B,): draws each row has made
        self._block: torch.Tensor | None = None  # (B, BLOCK) uniforms for draws [_base, _base + BLOCK) of each row
        self._base = torch.zeros(0, dtype=torch.long)  # (B,)
        self._pending: list[_Pending] = []
        self._names: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._rows) + len(self._pending)

    @property
    def free(self) -> int:
        """Rows that can still be added."""
        return self.max_rows - len(self)

    # ------------------------------------------------------------------ rows in and out
    def add(
        self,
        prompt: str | Prompt,
        options: DecodingOptions,
        seed: int,
        sample: int = 0,
        logprobs: int = 0,
        stream: bool = True,
        start: tuple[torch.Tensor, State] | None = None,
        keep_state: bool = False,
    ) -> int:
        """Read `prompt` and queue the row for the next step; -> its id. Greedy or sampling, one sequence
        (several samples: one row each, sample=0, 1, ...); `logprobs` alternatives reported per token.
        stream=False: no text until the row ends (its ids are decoded once then; cheaper when nobody
        reads the text as it grows), unless a stop string or line count needs to read it.
        start: (logits (1, V), state) to go on from instead of reading the prompt (a session that continues
        its last text; the prompt's ids then only give the text decoder its context). keep_state: the
        row's final event carries the logits and state after its last token (`RowEvent.carry`)."""
        if options.effective_strategy == "beam":
            raise ConfigError("beam search does not decode row by row; use generate() for it")
        if options.num_samples != 1:
            raise ConfigError("a row is one sequence: add one row per sample (sample=0, 1, ...)")
        if isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= MAX_LOGPROBS:
            raise ConfigError(f"logprobs must be an integer from 0 to {MAX_LOGPROBS}, got {logprobs!r}")
        if self.free < 1:
            raise ConfigError(f"the batch is full ({self.max_rows} rows); wait for a row to end")
        options.check_vocab(self.tokenizer.vocab_size)
        plan = make_plan(self.tokenizer, prompt, options)
        key = torch.tensor([row_key(seed, sample)], dtype=torch.long, device=self.model.device)  # (1, 2)
        text = RowText(plan.tracker(self.tokenizer) if stream or plan.text_stops else None)
        live = _Live(self._next_id, plan, options, text, logprobs, _signature(options, plan), keep_state=keep_state)
        self._next_id += 1
        self._pending.append(_Pending(live, key, start))
        return live.id

    def cancel(self, row: int) -> bool:
        """Drop a row at once (its client went away); -> whether it was there."""
        for i, p in enumerate(self._pending):
            if p.live.id == row:
                del self._pending[i]
                return True
        keep = [i for i, r in enumerate(self._rows) if r.id != row]
        if len(keep) == len(self._rows):
            return False
        self._keep(keep)
        return True

    def _admit(self) -> None:
        """Stack the queued rows under the running ones."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._read(pending)
        logits: list[torch.Tensor] = [p.start[0] for p in pending if p.start is not None]
        states: list[State] = [p.start[1] for p in pending if p.start is not None]
        keys = [p.key for p in pending]
        if self._logits is not None and self._state is not None and self._keys is not None:
            logits.insert(0, self._logits)
            states.insert(0, self._state)
            keys.insert(0, self._keys)
        self._logits = torch.cat(logits)
        self._state = tuple(torch.cat(parts, 1) for parts in zip(*states))
        self._keys = torch.cat(keys)
        zeros = torch.zeros(len(pending), dtype=torch.long, device=self._logits.device)
        self._counts = zeros if self._counts is None else torch.cat([self._counts, zeros])
        self._block = None
        for p in pending:
            live = p.live
            self._rows.append(live)
            group = self._groups.get(live.group)
            controls = HistoryControls.make(
                live.options, live.plan.ending, 1, self._logits.size(-1), self._logits.device, live.plan.ban_ids
            )
            if group is None:
                self._groups[live.group] = _Group(live.options, live.plan, [live.id], controls)
                continue
            group.members.append(live.id)
            if group.controls is not None and controls is not None:
                group.controls.extend(controls)

    def _read(self, pending: list[_Pending]) -> None:
        """Give every queued row without a start its prompt's (logits, state): read as packed batches of
        prompts (`read_many`) when the model can, each batch bounded like a window of logits, else alone."""
        todo = sorted((p for p in pending if p.start is None), key=lambda p: len(p.live.plan.prompt.ids))
        read_many = getattr(self.model, "read_many", None)
        width, vocab = max(1, int(getattr(self.model, "state_floats", 0))), self.model.vocab_size

        def floats(rows: int, longest: int) -> int:  # the padded outputs of every layer and the logits
            return rows * (longest * width + vocab)

        with eval_mode(self.model), torch.no_grad():  # type: ignore[arg-type]
            while todo:
                longest = len(todo[0].live.plan.prompt.ids)
                if read_many is None or floats(1, longest) > LOGIT_BUDGET:
                    p = todo.pop(0)
                    p.start = warm_up(self.model, p.live.plan.prompt.ids)  # (1, V): as generate() reads it
                    continue
                take = 1
                while take < len(todo):
                    longest = len(todo[take].live.plan.prompt.ids)
                    if floats(take + 1, longest) > LOGIT_BUDGET:
                        break
                    take += 1
                chunk, todo = todo[:take], todo[take:]
                logits, state = read_many([p.live.plan.prompt.ids for p in chunk])
                for i, p in enumerate(chunk):
                    p.start = (logits[i : i + 1], tuple(t[:, i : i + 1] for t in state))

    def _keep(self, keep: Sequence[int]) -> None:
        """Keep the rows at batch positions `keep` (ascending), dropping the others and their groups' rows."""
        gone = {r.id for i, r in enumerate(self._rows) if i not in set(keep)}
        self._rows = [self._rows[i] for i in keep]
        if not self._rows:
            self._state = self._logits = self._keys = self._counts = self._block = None
            self._groups.clear()
            return
        assert self._state is not None and self._logits is not None and self._keys is not None
        assert self._counts is not None
        index = torch.tensor(list(keep), dtype=torch.long, device=self._logits.device)
        self._state = tuple(s.index_select(1, index) for s in self._state)
        self._logits, self._keys, self._counts = self._logits[index], self._keys[index], self._counts[index]
        if self._block is not None:
            self._block, self._base = self._block[index], self._base[index]
        for sig, group in list(self._groups.items()):
            stay = [j for j, m in enumerate(group.members) if m not in gone]
            if not stay:
                del self._groups[sig]
            elif len(stay) < len(group.members):
                group.members = [group.members[j] for j in stay]
                if group.controls is not None:
                    group.controls.select(torch.tensor(stay, dtype=torch.long, device=index.device))

    # ------------------------------------------------------------------ one step
    def _uniforms(self) -> torch.Tensor:
        """Each row's next uniform (B,), from its own stream at its own count (a block of draws at a time)."""
        assert self._keys is not None and self._counts is not None
        if self._block is None or bool(((self._counts - self._base) >= BLOCK).any()):
            self._base = self._counts.clone()
            steps = self._base[:, None] + torch.arange(BLOCK, device=self._counts.device)[None, :]  # (B, BLOCK)
            self._block = uniforms(self._keys, steps)
        return self._block.gather(1, (self._counts - self._base)[:, None]).squeeze(1)

    @torch.no_grad()
    def step(self) -> list[RowEvent]:
        """Admit the queued rows, choose one token for every row, step the model; -> one event per row."""
        self._admit()
        if not self._rows:
            return []
        assert self._logits is not None and self._state is not None and self._counts is not None
        logits = self._logits.float()
        logp = torch.log_softmax(logits, dim=-1)  # (B, V): the model's own, before bans and filters
        u = self._uniforms()
        position = {r.id: i for i, r in enumerate(self._rows)}
        ids = torch.empty(len(self._rows), dtype=torch.long, device=logits.device)
        for group in self._groups.values():
            whole = len(group.members) == len(self._rows)
            index = None if whole else torch.tensor([position[m] for m in group.members], device=logits.device)
            part = logits if index is None else logits[index]
            allowed = ban(part, group.plan.banned)
            if group.controls is not None:
                allowed = group.controls(allowed)
            o = group.options
            if o.effective_strategy == "greedy":
                chosen = greedy_next(allowed)
            else:
                filtered = filter_logits(allowed, o.temperature, o.top_k, o.top_p, o.min_p, o.typical_p)
                chosen = sample_next(filtered, u if index is None else u[index])
            if group.controls is not None:
                group.controls.record(chosen)
            if index is None:
                ids = chosen
            else:
                ids[index] = chosen
        self._counts += 1
        chosen_lp = logp.gather(1, ids[:, None]).squeeze(1)  # (B,)
        top = self._top(logp)
        # one host transfer per step for the whole batch: the text of each row is the host's work
        events = self._accept(ids.tolist(), chosen_lp.double().tolist(), top)
        for i, e in enumerate(events):
            if e.done and self._rows[i].keep_state:
                e.carry = self.model.step(ids[i : i + 1], tuple(t[:, i : i + 1] for t in self._state))
        stay = [i for i, e in enumerate(events) if not e.done]
        if len(stay) < len(events):
            self._keep(stay)  # the ended rows leave before the model steps
            ids = ids[torch.tensor(stay, dtype=torch.long, device=ids.device)]
        if self._rows:
            assert self._state is not None
            self._logits, self._state = self.model.step(ids, self._state)
        return events

    def _top(self, logp: torch.Tensor) -> list[tuple[list[float], list[int]]] | None:
        """The most likely ids and their log-probabilities, for the rows that asked (None when none did)."""
        k = max((r.logprobs for r in self._rows), default=0)
        if k == 0:
            return None
        values, indices = logp.topk(min(k, logp.size(-1)), dim=-1)  # (B, k)
        return list(zip(values.double().tolist(), indices.tolist()))

    def _accept(
        self, ids: list[int], lps: list[float], top: list[tuple[list[float], list[int]]] | None
    ) -> list[RowEvent]:
        events = []
        for i, (live, token, lp) in enumerate(zip(self._rows, ids, lps)):
            piece = live.text.accept(token, lp, live.plan, live.options.max_new_tokens)
            details: tuple[TokenInfo, ...] = ()
            if live.logprobs and top is not None:
                values, indices = top[i]
                alts = tuple((self._name(j), v) for j, v in zip(indices[: live.logprobs], values[: live.logprobs]))
                details = (TokenInfo(self._name(token), lp, alts),)
                live.details.append(details[0])
            if live.text.done:
                emitted = sum(map(len, live.text.text))  # this step's piece included
                row = live.text
                result = (
                    row.result()
                    if row.tracker is not None
                    else render(self.tokenizer, live.plan, row.ids, row.logprob, row.reached_eos)
                )
                result.tokens = tuple(live.details)
                # what the decoder or the stop matcher held back comes out with the last piece
                events.append(RowEvent(live.id, piece + result.text[emitted:], details, True, result))
            else:
                events.append(RowEvent(live.id, piece, details))
        return events

    def _name(self, token: int) -> str:
        """A token's text as reported beside its log-probability (<unk>, <eos> by name)."""
        name = self._names.get(token)
        if name is None:
            tok = self.tokenizer
            name = "<unk>" if token == tok.unk_id else "<eos>" if token == tok.eos_id else tok.decode([token])
            self._names[token] = name
        return name


def run_batch(
    model: DecodingModel,
    tokenizer: TextCodec,
    requests: Sequence[tuple[str | Prompt, DecodingOptions, int]],
    max_rows: int = 256,
    logprobs: int = 0,
) -> list[Generation]:
    """Decode `requests` (prompt, options, seed) as batches of up to `max_rows` rows: -> their results in
    order. A convenience over `DecodeBatch` for a whole list known up front."""
    batch = DecodeBatch(model, tokenizer, max_rows)
    results: dict[int, Generation] = {}
    order: list[int] = []
    queue = list(requests)
    with eval_mode(model):  # type: ignore[arg-type]
        while queue or len(batch):
            while queue and batch.free:
                prompt, options, seed = queue.pop(0)
                order.append(batch.add(prompt, options, seed, logprobs=logprobs, stream=False))
            for event in batch.step():
                if event.done and event.result is not None:
                    results[event.row] = event.result
    return [results[i] for i in order]
