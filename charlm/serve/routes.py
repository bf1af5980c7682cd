"""The HTTP routes: completions (whole or streamed), models, health, the page; OpenAI-shaped errors for the rest.

A handler checks the key and the request before anything is queued, waits until its rows join the batch
(a failure there is still a plain 4xx or 5xx), then streams or collects its pieces. Whichever way a client
goes away (before admission, while collecting, mid-stream), its rows are cancelled at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from charlm.serve.errors import APIError, bad_request, not_found, server_error
from charlm.serve.responses import DONE, Choice, Meta, chunk, completion_body, event, usage_chunk
from charlm.serve.scheduler import Job, ModelWorker, Piece
from charlm.serve.schemas import parse_completion
from charlm.serve.state import ServerState

STATIC = Path(__file__).parent / "static"
T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.charlm
    return state


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refused past `limit` bytes (413) or when it is not one (400)."""
    declared = request.headers.get("content-length", "")
    too_big = APIError(413, f"the request body is over this server's cap of {limit:,} bytes", code="body_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_big
        parts.append(part)
    try:
        body = json.loads(b"".join(parts))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad_request(f"the body is not valid JSON ({str(exc)[:80]}); send a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request(f"the body must be a JSON object, got a JSON {type(body).__name__}")
    return body


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work` unless the client disconnects first (then `ClientGone`, `work` cancelled)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise ClientGone
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def completions(request: Request) -> Response:
    state = state_of(request)
    state.auth.check(request.headers.get("authorization"))
    body = await read_json(request, state.caps.max_body_bytes)
    served = state.pick(body.get("model"))
    req = parse_completion(body, served.lm, state.caps)
    job = Job(req, asyncio.get_running_loop())
    served.worker.submit(job)
    meta = Meta(served.name, req.seed)
    headers = {"x-charlm-seed": str(req.seed)}
    try:
        await until_disconnect(request.receive, job.admitted)
        if req.stream:
            return EventStream(stream_events(served.worker, job, meta), headers)
        choices = await until_disconnect(request.receive, collect(job))
    except ClientGone:
        served.worker.cancel(job)
        return Response(status_code=499)
    except BaseException:
        served.worker.cancel(job)
        raise
    return JSONResponse(completion_body(meta, req, choices), headers=headers)


async def collect(job: Job) -> list[Choice]:
    choices = [Choice(i) for i in range(job.request.choices)]
    while (item := await job.queue.get()) is not None:
        if isinstance(item, APIError):
            raise item
        for piece in item:
            choices[piece.choice].add(piece)
    return [c for c in choices if c.finish_reason is not None]  # a beam search may find fewer than n


async def stream_events(worker: ModelWorker, job: Job, meta: Meta) -> AsyncIterator[str]:
    """The server-sent events of one request: a chunk per choice per batch of pieces, then `data: [DONE]`.

    Pieces that arrived while the last event was being written go out together, so a slow reader (or a busy
    server) gets fewer, larger chunks instead of a growing backlog."""
    req = job.request
    choices = [Choice(i) for i in range(req.choices)]
    started: set[int] = set()
    finished = False
    try:
        while not finished:
            items = [await job.queue.get()]
            while not job.queue.empty() and isinstance(items[-1], list):
                items.append(job.queue.get_nowait())
            per_choice: dict[int, list[Piece]] = {}
            out: list[str] = []
            for item in items:
                if isinstance(item, list):
                    for piece in item:
                        per_choice.setdefault(piece.choice, []).append(piece)
            for index, pieces in per_choice.items():
                choice = choices[index]
                offset = choice.token_chars
                for piece in pieces:
                    choice.add(piece)
                out.append(chunk(meta, req, choice, pieces, index not in started, offset))
                started.add(index)
            last = items[-1]
            if isinstance(last, APIError):
                out.append(event(last.body()))
                finished = True
            elif last is None:
                if req.include_usage:
                    out.append(usage_chunk(meta, req, sum(c.completion_tokens for c in choices)))
                out.append(DONE)
                finished = True
            yield "".join(out)
    finally:
        if not finished:
            worker.cancel(job)


class EventStream(Response):
    """A text/event-stream response that watches for the client going away while it streams: then the stream
    is closed at once (its request's rows cancelled), whatever the ASGI server tells a writer."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], headers: dict[str, str]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(headers | {"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for text in self.events:
                await send({"type": "http.response.body", "body": text.encode("utf-8"), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        task = asyncio.ensure_future(pump())
        watch = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, watch):
                t.cancel()
            await asyncio.gather(task, watch, return_exceptions=True)
            await self.events.aclose()  # type: ignore[attr-defined]  # its finally cancels an unfinished request


async def models(request: Request) -> Response:
    state = state_of(request)
    state.auth.check(request.headers.get("authorization"))
    return JSONResponse({"object": "list", "data": [m.card() for m in state.models.values()]})


async def model(request: Request) -> Response:
    state = state_of(request)
    state.auth.check(request.headers.get("authorization"))
    return JSONResponse(state.pick(request.path_params["name"]).card())


async def health(request: Request) -> Response:
    state = state_of(request)
    return JSONResponse({"status": "ok", "models": {name: m.worker.load for name, m in state.models.items()}})


async def chat(request: Request) -> Response:
    raise APIError(
        404,
        "charlm models are not trained for chat, so this server has no /v1/chat/completions; "
        "send the conversation as a prompt to POST /v1/completions",
        code="not_found",
    )


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


async def api_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, APIError):
        err = exc
    elif isinstance(exc, HTTPException) and exc.status_code == 404:
        err = not_found(request.url.path)
    elif isinstance(exc, HTTPException):
        err = APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code="bad_request")
    else:
        err = server_error()
    return JSONResponse(err.body(), status_code=err.status, headers=_auth_header(err))


def _auth_header(err: APIError) -> dict[str, str] | None:
    return {"www-authenticate": "Bearer"} if err.status == 401 else None
