"""`charlm generate`: text from a checkpoint, one-shot or as an interactive REPL.

Sampling streams to stdout as it is produced; beam search prints the n-best
list with scores; `--json` prints one JSON object and nothing else on stdout.
Warnings, progress and statistics go to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch
from click.core import ParameterSource

from charlm.checkpoint import load_for_inference
from charlm.cli import main
from charlm.cli.common import console, domain_errors, err_console
from charlm.errors import CharlmError, ConfigError
from rich.text import Text

from charlm.devices import resolve_device
from charlm.sampling import STRATEGIES, DecodingOptions, Generation, describe_unknown, encode_prompt, generate, stream

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    r"""'\n', '\t' and '\\' typed on a command line -> newline, tab, backslash."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


@main.command("generate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--prompt", "-p", default="", help=r"Text to continue (\n and \t are understood). Default: a line start.")
@click.option("--length", "-n", type=click.IntRange(min=1), default=500, show_default=True, help="Most new tokens (characters for a char model).")
@click.option("--strategy", "-s", type=click.Choice(STRATEGIES), default="sample", show_default=True, help="How to pick each token.")
@click.option("--temperature", "-t", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Sampling: below 1 safer, above 1 wilder; 0 is greedy.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sampling: draw only from the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, help="Sampling: draw from the fewest tokens holding this much probability.")
@click.option("--beam-width", "-b", type=click.IntRange(min=1), default=5, show_default=True, help="Beam: hypotheses kept at each step.")
@click.option("--length-penalty", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Beam: score = sum(log p) / length^this; 0 ranks by the raw sum (favours short).")
@click.option("--n-best", type=click.IntRange(min=1), default=None, show_default="the beam width", help="Beam: hypotheses to print.")
@click.option("--num-samples", "-N", type=click.IntRange(min=1), default=1, show_default=True, help="Sampling: continuations to draw, as one batch.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed: the same seed gives the same text on the same machine.")
@click.option("--stop", multiple=True, help=r"End the text just before this string (repeatable; \n is understood).")
@click.option("--lines", type=click.IntRange(min=1), default=None, help="Stop after this many line ends (word models: <eos>, 1 by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (text, tokens, logprob) and nothing else on stdout.")
@click.option("--interactive", "-i", is_flag=True, help="A REPL: each line typed is a prompt; /help lists the settings.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Weights: best validation loss, or the last saved.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@domain_errors
def generate_cmd(
    checkpoint: Path,
    prompt: str,
    length: int,
    strategy: str,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    beam_width: int,
    length_penalty: float,
    n_best: int | None,
    num_samples: int,
    seed: int | None,
    stop: tuple[str, ...],
    lines: int | None,
    as_json: bool,
    interactive: bool,
    which: str,
    device: str,
) -> None:
    """Generate text from CHECKPOINT (a directory written by `charlm train`).

    \b
      charlm generate checkpoints/shakespeare --prompt "ROMEO:" --length 300 --temperature 0.8
      charlm generate checkpoints/shakespeare -p "ROMEO:" --strategy beam --beam-width 8 --stop '\\n\\n'
      charlm generate checkpoints/shakespeare --interactive
    """
    if as_json and interactive:
        raise ConfigError("--json and --interactive do not combine; drop one")
    options = DecodingOptions(
        strategy=strategy,
        max_new_tokens=length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        beam_width=beam_width,
        length_penalty=length_penalty,
        n_best=n_best,
        num_samples=num_samples,
        stop=tuple(unescape(s) for s in stop),
        lines=lines,
    )
    dev = resolve_device(device)
    _warn_unused(click.get_current_context(), options)
    model, tokenizer, _ = load_for_inference(checkpoint, which=which, device=dev)
    options.check_vocab(tokenizer.vocab_size)
    seed = secrets.randbelow(2**31) if seed is None else seed
    generator = torch.Generator(device=dev).manual_seed(seed)
    text = unescape(prompt)
    if interactive:
        Repl(model, tokenizer, options, seed, dev).run(first=text or None)
        return
    if as_json:
        p = _encode(tokenizer, text)
        results = generate(model, tokenizer, p, options, generator)
        payload = {
            "checkpoint": str(checkpoint),
            "prompt": text,
            "strategy": options.effective_strategy,
            "seed": seed,
            "options": options.to_dict(),
            "results": [r.to_dict() for r in results],
        }
        click.echo(json.dumps(payload, ensure_ascii=False))
        return
    try:
        continue_text(model, tokenizer, text, options, generator, echo_prompt=True)
    except KeyboardInterrupt:  # keep what was printed, end the line, exit like an interrupted shell command
        _write("\n")
        _note("[stopped]")
        raise click.exceptions.Exit(130) from None
    if options.effective_strategy == "sample":
        _note(f"seed {seed}")


# ------------------------------------------------------------------ output
def _note(message: str, label: str = "", style: str = "dim") -> None:
    """One line on stderr, never wrapped; `message` is shown as is (no markup)."""
    text = Text(label + " ", style=style) if label else Text()
    text.append(message, style="" if label else style)
    err_console.print(text, soft_wrap=True, highlight=False)


def _warn(message: str) -> None:
    _note(message, "warning:", "yellow")


def _error(message: str) -> None:
    _note(message, "error:", "red")


def _write(text: str) -> None:
    """Generated text goes out byte for byte: no markup, wrapping or tab expansion."""
    f = console.file
    f.write(text)
    f.flush()


def _encode(tokenizer: Any, text: str):
    p = encode_prompt(tokenizer, text)
    warning = describe_unknown(tokenizer, p)
    if warning:
        _warn(warning)
    return p


def continue_text(model: Any, tokenizer: Any, text: str, options: DecodingOptions, generator: torch.Generator, *, echo_prompt: bool) -> None:
    """Generate from `text` and print it: streamed (one sample), a list of samples, or the n-best list."""
    p = _encode(tokenizer, text)
    prefix = text if echo_prompt else ""
    start = time.perf_counter()
    if options.effective_strategy != "beam" and options.num_samples == 1:
        s = stream(model, tokenizer, p, options, generator)
        _write(prefix)
        last = prefix
        for piece in s:
            _write(piece)
            last = piece
        if not last.endswith("\n"):
            _write("\n")  # the next output starts on its own line
        if s.result is not None:
            _stats(s.result.num_tokens, time.perf_counter() - start, s.result)
        return
    results = generate(model, tokenizer, p, options, generator)
    elapsed = time.perf_counter() - start
    beam = options.effective_strategy == "beam"
    if beam and not results:
        _warn("beam search found no complete hypothesis")
    for i, r in enumerate(results, 1):
        if beam:
            head = f"#{i}  score {r.score:.4f}  log-prob {r.logprob:.2f}  {r.num_tokens} tokens  ({r.finish_reason})"
        else:
            head = f"sample {i}  log-prob {r.logprob:.2f}  {r.num_tokens} tokens  ({r.finish_reason})"
        console.rule(head, align="left", style="dim")
        body = prefix + r.text
        _write(body if body.endswith("\n") else body + "\n")
    total = sum(r.num_tokens for r in results) if not beam else max((r.num_tokens for r in results), default=0)
    _stats(total, elapsed, None)


def _stats(tokens: int, seconds: float, result: Generation | None) -> None:
    rate = f", {tokens / seconds:,.0f} tokens/s" if seconds > 0 else ""
    extra = f", log-prob {result.logprob:.2f}, {result.finish_reason}" if result is not None else ""
    _note(f"{tokens} tokens in {seconds:.2f}s{rate}{extra}")


def _warn_unused(ctx: click.Context, options: DecodingOptions) -> None:
    """Warn about options given on the command line that the chosen strategy does not read."""
    given = {n for n in ctx.params if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE}
    beam_only = ("beam_width", "length_penalty", "n_best")
    unused = {
        "beam": ("temperature", "top_k", "top_p"),
        "greedy": ("top_k", "top_p", *beam_only) + (("temperature",) if options.strategy == "greedy" else ()),
        "sample": beam_only,
    }[options.effective_strategy]
    names = [f"--{n.replace('_', '-')}" for n in unused if n in given]
    if names:
        verb = "does" if len(names) == 1 else "do"
        _warn(f"{', '.join(names)} {verb} not apply to {options.effective_strategy} decoding; ignored")


# ------------------------------------------------------------------ the REPL
_HELP = r"""Type a prompt and press Enter; the continuation streams back. Ctrl-C stops it; Ctrl-D or /quit leaves.
  /temperature T     sampling temperature (0 = greedy)
  /top-k K|off       draw only from the K most likely tokens
  /top-p P|off       draw from the fewest tokens holding probability P
  /greedy  /sample   switch strategy
  /beam W|off        beam search with width W (off: back to sampling)
  /length-penalty A  beam score = sum(log p) / length^A
  /n-best N          beam hypotheses to show
  /samples N         samples per prompt, as one batch
  /length N          most new tokens
  /stop TEXT|off     end each text before TEXT (\n understood)
  /lines N|off       stop after N line ends
  /seed S            re-seed the random generator
  /settings          show the settings
  /reset             back to the settings and seed the session started with
  /help  /quit
A line starting with // sends a prompt that starts with /."""

_QUIT = object()


def _int_or_off(value: str) -> int | None:
    return None if value.lower() in ("off", "none") else int(value)


def _float_or_off(value: str) -> float | None:
    return None if value.lower() in ("off", "none") else float(value)


class Repl:
    """The interactive loop: a line is a prompt or a /command; settings persist between prompts."""

    def __init__(self, model: Any, tokenizer: Any, options: DecodingOptions, seed: int, device: torch.device) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.options, self.seed = options, seed
        self._start = (options, seed)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._commands: dict[str, Callable[[str], Any]] = {
            "temperature": lambda v: self._set(temperature=float(v)),
            "top-k": lambda v: self._set(top_k=_int_or_off(v)),
            "top-p": lambda v: self._set(top_p=_float_or_off(v)),
            "greedy": lambda v: self._set(strategy="greedy", num_samples=1),
            "sample": lambda v: self._set(strategy="sample", temperature=self.options.temperature or 1.0),
            "beam": self._beam,
            "length-penalty": lambda v: self._set(length_penalty=float(v)),
            "n-best": lambda v: self._set(n_best=_int_or_off(v)),
            "samples": lambda v: self._set(num_samples=int(v)),
            "length": lambda v: self._set(max_new_tokens=int(v)),
            "stop": lambda v: self._set(stop=() if v.lower() in ("off", "none") else (unescape(v),)),
            "lines": lambda v: self._set(lines=_int_or_off(v)),
            "seed": self._reseed,
            "settings": lambda v: self.show(),
            "reset": self._reset,
            "help": lambda v: err_console.print(_HELP, markup=False, highlight=False, soft_wrap=True),
            "quit": lambda v: _QUIT,
            "exit": lambda v: _QUIT,
        }
        self._needs_value = {"temperature", "top-k", "top-p", "beam", "length-penalty", "n-best", "samples", "length", "stop", "lines", "seed"}

    # -------------------------------------------------------------- settings
    def settings_line(self) -> str:
        o = self.options
        s = o.effective_strategy
        parts = [f"strategy {s}"]
        if s == "sample":
            parts += [f"temperature {o.temperature:g}", f"top-k {o.top_k or 'off'}", f"top-p {o.top_p or 'off'}", f"samples {o.num_samples}"]
        elif s == "beam":
            parts += [f"beam width {o.beam_width}", f"length-penalty {o.length_penalty:g}", f"n-best {o.n_best or o.beam_width}"]
        parts += [f"length {o.max_new_tokens}", f"stop {', '.join(map(repr, o.stop)) or 'off'}", f"lines {o.lines or 'off'}", f"seed {self.seed}"]
        return " · ".join(parts)

    def show(self) -> None:
        _note(self.settings_line())

    def _set(self, **changes: Any) -> None:
        new = dataclasses.replace(self.options, **changes)
        new.check_vocab(self.tokenizer.vocab_size)
        self.options = new
        self.show()

    def _beam(self, value: str) -> None:
        if value.lower() == "off":
            self._set(strategy="sample", temperature=self.options.temperature or 1.0)
            return
        width = int(value)
        n_best = self.options.n_best if self.options.n_best is not None and self.options.n_best <= width else None
        self._set(strategy="beam", beam_width=width, n_best=n_best, num_samples=1)

    def _reseed(self, value: str) -> None:
        seed = int(value)
        if seed < 0:
            raise ConfigError(f"seed must be 0 or more, got {seed}")
        self.seed = seed
        self.generator.manual_seed(seed)
        self.show()

    def _reset(self, value: str) -> None:
        self.options, self.seed = self._start
        self.generator.manual_seed(self.seed)
        self.show()

    def command(self, line: str) -> Any:
        """Run one /command; a ConfigError (or a bad number) leaves the settings as they were."""
        name, _, value = line[1:].strip().partition(" ")
        name, value = name.lower(), value.strip()
        handler = self._commands.get(name)
        if handler is None:
            raise ConfigError(f"unknown command /{name}; type /help for the list")
        if name in self._needs_value and not value:
            raise ConfigError(f"/{name} needs a value, e.g. {_EXAMPLES.get(name, '/' + name + ' 1')}")
        try:
            return handler(value)
        except ValueError:
            raise ConfigError(f"/{name}: {value!r} is not a number; e.g. {_EXAMPLES.get(name, '/' + name + ' 1')}") from None

    # -------------------------------------------------------------- loop
    def run(self, first: str | None = None, read: Callable[[str], str] = input) -> None:
        """Until Ctrl-D, /quit or the end of piped input. Ctrl-C stops the current continuation only."""
        tty = sys.stdin.isatty()
        _note("charlm interactive: type a prompt, /help for commands, Ctrl-D or /quit to leave", style="bold")
        self.show()
        pending = [first] if first else []
        while True:
            try:
                line = pending.pop() if pending else read("> " if tty else "")
            except EOFError:
                if tty:
                    _write("\n")
                return
            except KeyboardInterrupt:
                _write("\n")
                _note("(Ctrl-D or /quit to leave)")
                continue
            if line.startswith("/") and not line.startswith("//"):
                try:
                    if self.command(line) is _QUIT:
                        return
                except CharlmError as exc:
                    _error(str(exc))
                continue
            if line.startswith("//"):
                line = line[1:]
            if not line.strip():
                continue
            try:
                continue_text(self.model, self.tokenizer, line, self.options, self.generator, echo_prompt=False)
            except KeyboardInterrupt:
                _write("\n")
                _note("[stopped]")
            except CharlmError as exc:
                _error(str(exc))


_EXAMPLES = {
    "temperature": "/temperature 0.7",
    "top-k": "/top-k 20 or /top-k off",
    "top-p": "/top-p 0.9 or /top-p off",
    "beam": "/beam 5 or /beam off",
    "length-penalty": "/length-penalty 0.6",
    "n-best": "/n-best 3",
    "samples": "/samples 3",
    "length": "/length 300",
    "stop": r"/stop \n or /stop off",
    "lines": "/lines 2 or /lines off",
    "seed": "/seed 1",
}
