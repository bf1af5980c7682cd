"""What every command shares: the consoles, error translation, and option types."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from charlm.data import decode_text
from charlm.errors import CharlmError, CorpusError

F = TypeVar("F", bound=Callable[..., Any])

DEVICE_HELP = "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."

# stdout carries results (text, tables, JSON); stderr carries progress and errors.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def domain_errors(func: F) -> F:
    """Turn a `CharlmError` raised inside a command into a one-line click error (exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CharlmError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def parse_duration(text: str) -> float:
    """'90s' -> 90.0, '10m' -> 600.0, '1h' -> 3600.0, '45' -> 45.0 (seconds).

    Raises ValueError with a message that shows the accepted forms."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration; use a number with s, m or h, e.g. 90s, 10m, 1h")
    seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower() if m.group(2) else None]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive, e.g. 90s, 10m, 1h")
    return seconds


class Duration(click.ParamType):
    """A click type for wall-clock budgets such as 90s, 10m, 1h."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def option_table(rows: list[tuple[str, dict[str, Any]]]) -> Callable[[F], F]:
    """Click options from a table, one row each: ("--flag -f [dest]", click.option keywords).

    The first row is listed first in --help. A table keeps a command with many
    options readable: one line per option instead of a seven-line decorator.
    """

    def apply(func: F) -> F:
        for spec, kwargs in reversed(rows):
            func = click.option(*spec.split(), **kwargs)(func)
        return func

    return apply


def read_input(file: Path, hint: str) -> str:
    """The text of FILE or of standard input ('-'), BOM dropped, CRLF and CR read as LF.

    A binary or non-UTF-8 input is a one-line CorpusError ending with `hint` (what to pass instead)."""
    name = "standard input" if str(file) == "-" else str(file)
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read {name}: {exc.strerror or exc}") from None
    return decode_text(data, name, hint)
