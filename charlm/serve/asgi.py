"""The ASGI app: the routes over a `ServerState`, for uvicorn or any ASGI server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from charlm.serve import routes
from charlm.serve.caps import Caps
from charlm.serve.errors import APIError
from charlm.serve.models import Models, load_models
from charlm.serve.scheduler import BatchFactory, decode_batch
from charlm.serve.state import ServerState


def app(
    models: Models,
    *,
    caps: Caps | None = None,
    api_key: str | None = None,
    device: str = "auto",
    grace: float = 5.0,
    make_batch: BatchFactory = decode_batch,
) -> Starlette:
    """An ASGI app serving `models` (checkpoint paths, `NAME=PATH`, loaded `LanguageModel`s, or a mapping of
    names to either): the OpenAI-style API under /v1, /health, and the page at /. Its decode loops start and
    stop with the app's lifespan; `app.state.charlm` is its `ServerState`."""
    state = ServerState(load_models(models, device=device), caps or Caps(), api_key, make_batch)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            state.stop(grace)
            state.join(grace + 5.0)

    application = Starlette(
        routes=[
            Route("/", routes.page),
            Route("/health", routes.health),
            Route("/v1/completions", routes.completions, methods=["POST"]),
            Route("/v1/chat/completions", routes.chat, methods=["POST", "GET"]),
            Route("/v1/models", routes.models),
            Route("/v1/models/{name:path}", routes.model),
            Mount("/static", StaticFiles(directory=routes.STATIC), name="static"),
        ],
        exception_handlers={APIError: routes.api_error, HTTPException: routes.api_error, Exception: routes.api_error},
        lifespan=lifespan,
    )
    application.state.charlm = state
    return application
