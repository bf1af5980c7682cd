"""Running the app on uvicorn: in the foreground until Ctrl-C or SIGTERM (`run`), or in a thread (`start`).

Stopping is clean either way: the server stops accepting connections, each decode loop admits nothing more
and lets the rows it holds decode for `grace` seconds (most requests finish; their streams end with
`[DONE]`), then cancels what is left, whose streams end with an error event saying the server is stopping.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

from charlm.errors import ConfigError
from charlm.serve.asgi import app
from charlm.serve.caps import Caps
from charlm.serve.models import Models
from charlm.serve.state import ServerState


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); a one-line error when it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.__class__.__name__}: {exc}); pick another --port or --host"
        ) from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, telling the decode loops to wind down when it is asked to stop, and not raising the
    signal again once it has stopped (the command then exits normally)."""

    def __init__(self, config: uvicorn.Config, state: ServerState, grace: float) -> None:
        super().__init__(config)
        self.state, self.grace = state, grace

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self.state.stop(self.grace)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def _server(models: Models, sock: socket.socket, *, quiet: bool, grace: float, **kw: Any) -> _Server:
    application = app(models, grace=grace, **kw)
    config = uvicorn.Config(
        application,
        log_level="warning" if quiet else "info",
        timeout_graceful_shutdown=int(grace) + 2,
        lifespan="on",
        access_log=not quiet,
    )
    return _Server(config, application.state.charlm, grace)


def run(
    models: Models,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    api_key: str | None = None,
    caps: Caps | None = None,
    device: str = "auto",
    grace: float = 5.0,
    quiet: bool = False,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `models` on host:port until Ctrl-C or SIGTERM. `ready(url)` is called once it listens."""
    sock = listen(host, port)
    server = _server(models, sock, quiet=quiet, grace=grace, api_key=api_key, caps=caps, device=device)
    if ready is not None:
        ready(url_of(sock))
    server.run(sockets=[sock])


class Running:
    """A server running in a thread of this process: `url`, and `stop()` (also as a context manager)."""

    def __init__(self, server: _Server, sock: socket.socket) -> None:
        self.url = url_of(sock)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="charlm-serve", daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not server.started:
            raise ConfigError("the server did not start; its log says why")

    @property
    def state(self) -> ServerState:
        return self._server.state

    def stop(self, timeout: float = 30.0) -> None:
        self._server.state.stop(self._server.grace)
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(
    models: Models,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    quiet: bool = True,
    grace: float = 5.0,
    **kw: Any,
) -> Running:
    """Serve `models` from a thread of this process (port 0: a free port; see `.url`) until `.stop()`."""
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING if quiet else logging.INFO)
    sock = listen(host, port)
    return Running(_server(models, sock, quiet=quiet, grace=grace, **kw), sock)
