"""Stopping a run cleanly on SIGINT, SIGTERM or SIGHUP: `StopSignals`."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignals:
    """The first SIGINT, SIGTERM or SIGHUP asks the loop to save and stop at the next step; a second interrupts at once.

    A job scheduler's SIGTERM and a closed terminal's SIGHUP save like Ctrl-C does.
    """

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
