"""Reading what a person types: one entry of the REPL (a line, lines joined by a trailing backslash, or a
block between lines of three double quotes), and readline's line editing with a history kept across
sessions where the platform has readline."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charlm.cli.terminal import warn


def read_entry(read: Callable[[str], str], tty: bool) -> str:
    """One entry: a line; lines joined while one ends with a backslash; or a block between two lines of
    three double quotes."""
    first = read("> " if tty else "")
    if first.strip() == '"""':
        lines = []
        while (line := read("... " if tty else "")).strip() != '"""':
            lines.append(line)
        return "\n".join(lines)
    lines = [first]
    while lines[-1].endswith("\\") and not lines[-1].endswith("\\\\"):
        lines[-1] = lines[-1][:-1]
        lines.append(read("... " if tty else ""))
    return "\n".join(lines)


class LineHistory:
    """readline's line editing and a history file kept across sessions (when the platform has readline)."""

    def __init__(self, readline: Any, path: Path) -> None:
        self.readline, self.path = readline, path

    @staticmethod
    def default_path() -> Path:
        return Path(os.environ.get("CHARLM_HISTORY") or Path.home() / ".local" / "state" / "charlm" / "history")

    @classmethod
    def open(cls) -> LineHistory | None:
        try:
            import readline  # the standard library's GNU readline or libedit: arrow keys, Ctrl-R, history
        except ImportError:
            return None
        path = cls.default_path()
        readline.set_history_length(1000)
        with contextlib.suppress(OSError):
            readline.read_history_file(path)
        return cls(readline, path)

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.readline.write_history_file(self.path)
        except OSError as exc:
            warn(f"could not keep the history in {self.path}: {exc.strerror or exc}")
