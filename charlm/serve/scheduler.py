"""One decode loop per model: requests join the running batch at a step boundary and leave it when done.

    request ──submit──▶ waiting (FIFO, capped) ──admit at a step boundary──▶ rows of the DecodeBatch
    worker thread: admit, cancel, one batch.step() for every live row, post the step's events to the loop
    event loop: each request's asyncio.Queue gets its rows' pieces; its handler streams or collects them

A recurrent model's state has a fixed size, so a request that arrives while others decode is warmed on its
prompt and joins the next step; every live row advances one token per step, so no request waits for another
to finish (continuous batching). Admission is first come, first served: a request that needs more rows than
are free waits at the head, and the ones behind it wait too, so a large request is never starved. A client
that goes away is cancelled at the next step boundary (its rows freed at once). Beam search does not fit
the batch (its hypotheses branch and merge): a beam request runs whole through `LanguageModel.generate` in
the same worker between two steps, which pauses the batch for that long (its width and length are capped).
Events go to the loop once per step (one `call_soon_threadsafe` for all rows), not once per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from charlm.api import LanguageModel
from charlm.errors import CharlmError
from charlm.sampling import DecodeBatch, Generation, TokenInfo
from charlm.serve.caps import Caps
from charlm.serve.errors import APIError, from_domain, server_error, shutting_down
from charlm.serve.schemas import CompletionRequest

log = logging.getLogger("charlm.serve")


@dataclass(frozen=True)
class Piece:
    """Text released for one choice of a request; `result` is set on the choice's last piece."""

    choice: int
    text: str
    tokens: tuple[TokenInfo, ...] = ()  # the tokens behind the text, when logprobs were asked for
    result: Generation | None = None


class Admitted:
    """The mark a worker posts once a request's rows have joined the batch."""


ADMITTED = Admitted()
Item = list[Piece] | APIError | Admitted | None  # what a worker posts for a request; None: all its rows are done


class Job:
    """One request in a worker: its queue of pieces (read on the event loop) and its rows (the worker's)."""

    def __init__(self, request: CompletionRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.queue: asyncio.Queue[list[Piece] | APIError | None] = asyncio.Queue()
        self.admitted: asyncio.Future[None] = loop.create_future()  # set when its rows joined (or it failed)
        self.cancelled = False  # set on the loop, read by the worker: a plain flag
        self.rows: list[int] = []  # the DecodeBatch rows it holds (worker thread only)
        self.remaining = 0  # rows not yet done (worker thread only)

    @property
    def rows_needed(self) -> int:
        return 0 if self.request.beam else self.request.choices


BatchFactory = Callable[[Any, Any, int], Any]


def decode_batch(model: Any, tokenizer: Any, max_rows: int) -> DecodeBatch:
    return DecodeBatch(model, tokenizer, max_rows=max_rows)


class ModelWorker:
    """The decode loop of one model, in its own thread; `submit` and `cancel` are called from the event loop."""

    def __init__(self, name: str, lm: LanguageModel, caps: Caps, make_batch: BatchFactory = decode_batch) -> None:
        self.name, self.lm, self.caps = name, lm, caps
        self._make_batch = make_batch
        self._batch = make_batch(lm.model, lm.tokenizer, caps.max_rows)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._cancelled: list[Job] = []
        self._live: dict[int, tuple[Job, int]] = {}  # batch row -> (its job, its choice index)
        self._stopping = False
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._run, name=f"charlm-decode-{name}", daemon=True)
        self.steps = 0  # batch steps run (for /health)

    # ------------------------------------------------------------------ the event loop's side
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a request; a 429 when the queue is full, a 503 once the server is stopping."""
        with self._cond:
            if self._stopping:
                raise shutting_down()
            if len(self._waiting) >= self.caps.max_queue:
                raise APIError(
                    429,
                    f"model {self.name!r} has {self.caps.max_queue} requests waiting already; retry in a moment",
                    type="rate_limit_error",
                    code="queue_full",
                )
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Free a request's rows at the next step boundary (its client went away)."""
        job.cancelled = True
        with self._cond:
            self._cancelled.append(job)
            self._cond.notify()

    def stop(self, grace: float) -> None:
        """Admit nothing more; rows still decoding after `grace` seconds are cancelled and told why."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + grace
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def load(self) -> dict[str, int]:
        return {"live_rows": len(self._live), "waiting": len(self._waiting), "steps": self.steps}

    # ------------------------------------------------------------------ the worker thread
    def _run(self) -> None:
        torch.set_grad_enabled(False)  # grad mode is per thread
        while True:
            with self._cond:
                while not (self._waiting or self._cancelled or self._live or self._stopping):
                    self._cond.wait()
                cancelled, self._cancelled = self._cancelled, []
                admit, refused = self._admissible()
                overdue = self._stopping and time.monotonic() >= self._deadline
            posts: dict[Job, list[Item]] = {}
            for job in refused:
                posts.setdefault(job, []).append(shutting_down())
            for job in cancelled:
                self._drop(job)
            if overdue:
                for job in {j for j, _ in self._live.values()}:
                    self._drop(job)
                    posts.setdefault(job, []).append(shutting_down())
            for job in admit:
                self._admit(job, posts)
            if self._live:
                self._step(posts)
            self._post(posts)
            if self._stopping and not self._live and not self._waiting:
                return

    def _admissible(self) -> tuple[list[Job], list[Job]]:
        """The waiting requests that fit the free rows now, first come first served (under the lock)."""
        if self._stopping:
            refused = list(self._waiting)
            self._waiting.clear()
            return [], refused
        free = self.caps.max_rows - len(self._live)
        admit: list[Job] = []
        while self._waiting and (self._waiting[0].cancelled or self._waiting[0].rows_needed <= free):
            job = self._waiting.popleft()
            if not job.cancelled:
                free -= job.rows_needed
                admit.append(job)
        return admit, []

    def _admit(self, job: Job, posts: dict[Job, list[Item]]) -> None:
        """Warm the job's prompts and add its rows (or run its beam search whole); tell the loop."""
        req = job.request
        try:
            if req.beam:
                posts[job] = [ADMITTED, self._beam(job), None]
                return
            for p, prompt in enumerate(req.prompts):
                for i in range(req.n):
                    row = self._batch.add(
                        prompt, req.options, req.seed, sample=i, logprobs=req.logprobs or 0, stream=req.stream
                    )
                    job.rows.append(row)
                    self._live[row] = (job, p * req.n + i)
            job.remaining = len(job.rows)
            posts[job] = [ADMITTED]
        except CharlmError as exc:
            self._drop(job)
            posts[job] = [from_domain(exc)]
        except Exception:
            log.exception("admitting a request to %s failed", self.name)
            self._drop(job)
            posts[job] = [server_error()]

    def _beam(self, job: Job) -> list[Piece]:
        req = job.request
        pieces = []
        for p, prompt in enumerate(req.prompts):
            found = self.lm.generate(prompt, req.options, seed=req.seed)
            pieces += [Piece(p * req.n + i, g.text, (), g) for i, g in enumerate(found)]
        return pieces

    def _step(self, posts: dict[Job, list[Item]]) -> None:
        try:
            events = self._batch.step()
        except Exception:
            log.exception("a decoding step of %s failed; its requests are ended", self.name)
            for job in {j for j, _ in self._live.values()}:
                posts.setdefault(job, []).append(server_error())
            self._live.clear()
            self._batch = self._make_batch(self.lm.model, self.lm.tokenizer, self.caps.max_rows)
            return
        self.steps += 1
        for ev in events:
            job, choice = self._live[ev.row]
            if ev.done:
                del self._live[ev.row]
                job.remaining -= 1
            if ev.piece or ev.done:
                items = posts.setdefault(job, [])
                last = items[-1] if items else None
                if not isinstance(last, list):
                    last = []
                    items.append(last)
                last.append(Piece(choice, ev.piece, tuple(ev.tokens), ev.result if ev.done else None))
            if ev.done and job.remaining == 0:
                posts[job].append(None)

    def _drop(self, job: Job) -> None:
        """Free the rows a job holds."""
        for row in job.rows:
            if self._live.pop(row, None) is not None:
                self._batch.cancel(row)
        job.rows = []

    def _post(self, posts: dict[Job, list[Item]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, list[Item]]]] = {}
        for job, items in posts.items():
            by_loop.setdefault(job.loop, []).append((job, items))
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
                loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[Job, list[Item]]]) -> None:
    """On the event loop: hand each job what its rows produced this step."""
    for job, items in batch:
        for item in items:
            if isinstance(item, Admitted):
                if not job.admitted.done():
                    job.admitted.set_result(None)
            elif isinstance(item, APIError) and not job.admitted.done():
                job.admitted.set_exception(item)
            elif not job.cancelled:
                job.queue.put_nowait(item)
