"""Serving: trained models behind an HTTP API that OpenAI clients speak, with a page to try them (charlm[serve]).

    import charlm.serve
    charlm.serve.run(["checkpoints/tinyshakespeare"], port=8000)          # until Ctrl-C
    with charlm.serve.start([charlm.load("checkpoints/tinyshakespeare")]) as server:   # in a thread
        print(server.url)                                                  # http://127.0.0.1:PORT
    asgi_app = charlm.serve.app({"shakes": "checkpoints/tinyshakespeare"})  # for any ASGI server

    caps       Caps: request and queue limits
    schemas    a completion request's JSON, checked field by field
    scheduler  one decode loop per model: continuous batching over charlm.sampling.DecodeBatch
    responses  OpenAI-shaped bodies and stream chunks
    routes     the HTTP handlers; asgi: the Starlette app; server: uvicorn, signals, threads
    static/    the page (plain HTML, CSS and JavaScript, no build step, nothing fetched from elsewhere)

The server stack (Starlette on uvicorn) is the optional extra `charlm[serve]`: using a name here without it
raises a one-line `ConfigError` naming `pip install "charlm[serve]"`.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from charlm.errors import ConfigError

_NAMES = {
    "app": "asgi",
    "start": "server",
    "run": "server",
    "Running": "server",
    "Caps": "caps",
    "load_models": "models",
}
EXTRA = ("starlette", "uvicorn")

if TYPE_CHECKING:
    from charlm.serve.asgi import app
    from charlm.serve.caps import Caps
    from charlm.serve.models import load_models
    from charlm.serve.server import Running, run, start

__all__ = ["Caps", "Running", "app", "load_models", "require_extra", "run", "start"]


def require_extra() -> None:
    """A one-line ConfigError unless the server stack of the `serve` extra is installed."""
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"serving needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
            'run: pip install "charlm[serve]"'
        )


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        require_extra()
        value = getattr(importlib.import_module(f"charlm.serve.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'charlm.serve' has no attribute {name!r}")
