"""`charlm generate --prompts FILE`: many prompts from a file, decoded as one running batch, written as JSON
lines in input order while the batch runs.

A line is a prompt as it is (no escapes), or a JSON object: {"prompt": "...", any decoding option by its
library or command-line name ("temperature", "top_p" or "top-p", "length", ...), "seed", "logprobs", "id"}.
Every line is checked before anything is decoded; a bad line (invalid JSON, an unknown option, an empty
prompt, a value out of range) is one error naming the file and line, unless --skip-bad turns it into a
warning and an {"line": N, "error": "..."} object in its place.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from charlm.api import Completions, LanguageModel, Request
from charlm.cli.common import err_console, read_input
from charlm.cli.terminal import note, warn
from charlm.errors import CharlmError, ConfigError
from charlm.sampling import DecodingOptions, describe_unknown
from charlm.training import MAX_SEED


def read_requests(
    lm: LanguageModel,
    file: Path,
    options: DecodingOptions,
    seed: int,
    logprobs: int,
    batch_size: int,
    skip_bad: bool,
) -> list[tuple[int, Request | str]]:
    """(line number, the checked request or, with skip_bad, the line's error) for every line of FILE."""
    name = "standard input" if str(file) == "-" else str(file)
    text = read_input(file, "pass a UTF-8 text file with one prompt per line as --prompts")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's last line end
    if not lines:
        raise ConfigError(f"{name} has no prompts; write one prompt (or JSON object) per line")
    out: list[tuple[int, Request | str]] = []
    for n, line in enumerate(lines, 1):
        try:
            item = _item(line)
            request = lm.request(
                item, options, seed=(seed + n - 1) % (MAX_SEED + 1), logprobs=logprobs, batch_size=batch_size
            )
        except CharlmError as exc:
            if not skip_bad:
                raise ConfigError(f"{name} line {n}: {exc} (or pass --skip-bad to skip bad lines)") from None
            warn(f"{name} line {n}: {exc}; skipped")
            out.append((n, str(exc)))
            continue
        if request.prompt.unknown:
            warn(f"{name} line {n}: {describe_unknown(lm.tokenizer, request.prompt)}")
        out.append((n, request))
    return out


def _item(line: str) -> str | dict[str, Any]:
    if not line.lstrip().startswith("{"):
        return line
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise ConfigError("a JSON line must be an object with a 'prompt'")
    return item


def write_results(lm: LanguageModel, lines: list[tuple[int, Request | str]], batch_size: int) -> int:
    """Decode the good lines and print one JSON line per input line, in order; -> tokens generated."""
    good = [r for _, r in lines if isinstance(r, Request)]
    results = lm.generate_many(good, batch_size=batch_size) if good else iter(())
    tokens = 0
    with _progress(len(good)) as advance:
        for n, r in lines:
            if not isinstance(r, Request):
                click.echo(json.dumps({"line": n, "error": r}, ensure_ascii=False))
                continue
            found: Completions = next(results)
            tokens += sum(g.num_tokens for g in found)
            record: dict[str, Any] = {"line": n}
            if r.id is not None:
                record["id"] = r.id
            record |= {
                "prompt": r.text,
                "seed": r.seed,
                "strategy": found.strategy,
                "results": [g.to_dict() for g in found],
            }
            click.echo(json.dumps(record, ensure_ascii=False))
            advance()
    return tokens


class _progress:
    """A bar on stderr when it is a terminal (long jobs); nothing otherwise (stdout stays pure JSON lines)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Progress | None = None

    def __enter__(self) -> Any:
        if not err_console.is_terminal or self.total < 2:
            return lambda: None
        self.bar = Progress(
            TextColumn("prompts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console
        )
        self.bar.start()
        task = self.bar.add_task("prompts", total=self.total)
        bar = self.bar
        return lambda: bar.advance(task)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_prompts(
    lm: LanguageModel,
    file: Path,
    options: DecodingOptions,
    seed: int,
    logprobs: int,
    batch_size: int,
    skip_bad: bool,
) -> None:
    """The whole of --prompts: check every line, decode, print, then a one-line summary on stderr."""
    lines = read_requests(lm, file, options, seed, logprobs, batch_size, skip_bad)
    start = time.perf_counter()
    tokens = write_results(lm, lines, batch_size)
    seconds = time.perf_counter() - start
    rate = f", {tokens / seconds:,.0f} tokens/s" if seconds > 0 else ""
    done = sum(isinstance(r, Request) for _, r in lines)
    plural = "s" if done != 1 else ""
    note(f"{done} prompt{plural}, {tokens:,} tokens in {seconds:.2f}s{rate}; line i's seed is {seed} + i - 1")
