"""What a training run tells a front end: the `TrainObserver` protocol, and `SilentObserver`."""

from __future__ import annotations

from typing import Any, Protocol


class TrainObserver(Protocol):
    """What the trainer tells a front end (the CLI's progress display, a test).

    An observer may also have `on_prepare(phase, done, total)`: the one-time passes that tokenize a new corpus.
    """

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_log(self, record: dict[str, Any]) -> None: ...
    def on_eval(self, record: dict[str, Any]) -> None: ...
    def on_end(self, summary: dict[str, Any]) -> None: ...


class SilentObserver:
    """Hears everything, shows nothing (library use, non-zero ranks)."""

    def on_start(self, info: dict[str, Any]) -> None:
        pass

    def on_log(self, record: dict[str, Any]) -> None:
        pass

    def on_eval(self, record: dict[str, Any]) -> None:
        pass

    def on_end(self, summary: dict[str, Any]) -> None:
        pass
