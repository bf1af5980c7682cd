"""Terminal output of `charlm generate` and its REPL: stderr notes, generated text byte for byte, and a
continuation printed as the library produces it (streamed, a list of samples, or the n-best list).

Both the one-shot command and the REPL print through here, so neither imports the other.
"""

from __future__ import annotations

import contextlib
import re
import time

import torch
from rich.text import Text

from charlm.api import Completions, LanguageModel, Stream
from charlm.cli.common import console, err_console
from charlm.sampling import DecodingOptions, Generation

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    r"""'\n', '\t' and '\\' typed on a command line -> newline, tab, backslash."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


def note(message: str, label: str = "", style: str = "dim") -> None:
    """One line on stderr, never wrapped; `message` is shown as is (no markup)."""
    text = Text(label + " ", style=style) if label else Text()
    text.append(message, style="" if label else style)
    err_console.print(text, soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    note(message, "warning:", "yellow")


def error(message: str) -> None:
    note(message, "error:", "red")


def write(text: str) -> None:
    """Generated text goes out byte for byte: no markup, wrapping or tab expansion."""
    f = console.file
    f.write(text)
    f.flush()


def continue_text(
    lm: LanguageModel, text: str, options: DecodingOptions, seed: int | torch.Generator, *, echo_prompt: bool
) -> None:
    """Generate from `text` and print it: streamed (one sample), a list of samples, or the n-best list.

    `seed`: an int seeds a fresh generator (the one-shot command); a generator is drawn from (the REPL's session).
    """
    prefix = text if echo_prompt else ""
    if options.effective_strategy != "beam" and options.num_samples == 1:
        _print_stream(lm.stream(text, options, seed=seed), prefix)
        return
    start = time.perf_counter()
    found = lm.generate(text, options, seed=seed)
    print_results(found, prefix, time.perf_counter() - start)


def print_results(found: Completions, prefix: str, elapsed: float) -> None:
    """Several samples, or the n-best list, each under a rule with its figures; then the statistics."""
    if found.warning:
        warn(found.warning)
    beam = found.strategy == "beam"
    if beam and not found:
        warn("beam search found no complete hypothesis")
    for i, r in enumerate(found, 1):
        if beam:
            head = f"#{i}  score {r.score:.4f}  log-prob {r.logprob:.2f}  {r.num_tokens} tokens  ({r.finish_reason})"
        else:
            head = f"sample {i}  log-prob {r.logprob:.2f}  {r.num_tokens} tokens  ({r.finish_reason})"
        console.rule(head, align="left", style="dim")
        body = prefix + r.text
        write(body if body.endswith("\n") else body + "\n")
    total = sum(r.num_tokens for r in found) if not beam else max((r.num_tokens for r in found), default=0)
    stats(total, elapsed, None)


def _print_stream(s: Stream, prefix: str) -> None:
    """Print one continuation piece by piece as it is produced, then its statistics."""
    if s.warning:
        warn(s.warning)
    start = time.perf_counter()
    write(prefix)
    last = prefix
    with contextlib.closing(s):  # a Ctrl-C while printing still gives the model its mode back
        for piece in s:
            write(piece)
            last = piece
    if not last.endswith("\n"):
        write("\n")  # the next output starts on its own line
    if s.result is not None:
        stats(s.result.num_tokens, time.perf_counter() - start, s.result)


def stats(tokens: int, seconds: float, result: Generation | None) -> None:
    rate = f", {tokens / seconds:,.0f} tokens/s" if seconds > 0 else ""
    extra = f", log-prob {result.logprob:.2f}, {result.finish_reason}" if result is not None else ""
    note(f"{tokens} tokens in {seconds:.2f}s{rate}{extra}")
