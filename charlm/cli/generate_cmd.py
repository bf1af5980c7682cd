"""`charlm generate`: text from a checkpoint, one-shot or as an interactive REPL.

Sampling streams to stdout as it is produced; beam search prints the n-best
list with scores; `--json` prints one JSON object and nothing else on stdout.
Warnings, progress and statistics go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import click
import torch
from click.core import ParameterSource
from rich.text import Text

from charlm.checkpoint import load_for_inference
from charlm.cli.common import DEVICE_HELP, console, domain_errors, err_console, option_table
from charlm.errors import ConfigError
from charlm.runtime import resolve_device
from charlm.sampling import (
    MAX_BEAM_WIDTH,
    MAX_NEW_TOKENS,
    MAX_SAMPLES,
    STRATEGIES,
    DecodingOptions,
    Generation,
    describe_unknown,
    encode_prompt,
    generate,
    stream,
)
from charlm.training import MAX_SEED

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    r"""'\n', '\t' and '\\' typed on a command line -> newline, tab, backslash."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


# The decoding options, named as DecodingOptions names them (length is max_new_tokens).
# fmt: off
DECODING_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--length -n max_new_tokens", dict(type=click.IntRange(1, MAX_NEW_TOKENS), default=500, show_default=True,
                                        help="Most new tokens (characters for a char model).")),
    ("--strategy -s", dict(type=click.Choice(STRATEGIES), default="sample", show_default=True,
                           help="How to pick each token.")),
    ("--temperature -t", dict(type=click.FloatRange(min=0), default=1.0, show_default=True,
                              help="Sampling: below 1 safer, above 1 wilder; 0 is greedy.")),
    ("--top-k", dict(type=click.IntRange(min=1), help="Sampling: draw only from the k most likely tokens.")),
    ("--top-p", dict(type=click.FloatRange(0, 1, min_open=True),
                     help="Sampling: draw from the fewest tokens holding this much probability.")),
    ("--beam-width -b", dict(type=click.IntRange(1, MAX_BEAM_WIDTH), default=5, show_default=True,
                             help="Beam: hypotheses kept at each step.")),
    ("--length-penalty", dict(type=click.FloatRange(min=0), default=1.0, show_default=True,
                              help="Beam: score = sum(log p) / length^this; 0 ranks by the raw sum (favours short).")),
    ("--n-best", dict(type=click.IntRange(min=1), show_default="the beam width", help="Beam: hypotheses to print.")),
    ("--exact-beam", dict(is_flag=True,
                          help="Beam: search on to --length instead of stopping once nothing live scores better.")),
    ("--num-samples -N", dict(type=click.IntRange(1, MAX_SAMPLES), default=1, show_default=True,
                              help="Sampling: continuations to draw, as one batch.")),
    ("--stop", dict(multiple=True, help=r"End the text just before this string (repeatable; \n is understood).")),
    ("--lines", dict(type=click.IntRange(min=1),
                     help="Stop after this many line ends (word models: <eos>, 1 by default).")),
    ("--allow-unk", dict(is_flag=True, help="Let the model emit <unk> (masked by default: it has no text).")),
]
# fmt: on


@click.command("generate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--prompt", "-p", default="", help=r"Text to continue (\n and \t are understood). Default: a line start.")
@option_table(DECODING_OPTIONS)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), help="Random seed: the same seed gives the same text here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON and nothing else on stdout.")
@click.option(
    "--interactive", "-i", is_flag=True, help="A REPL: each line typed is a prompt; /help lists the settings."
)
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Which weights.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--no-verify", is_flag=True, help="Load weights that do not match their recorded SHA-256 (damaged).")
@domain_errors
def generate_command(
    checkpoint: Path,
    prompt: str,
    seed: int | None,
    as_json: bool,
    interactive: bool,
    which: str,
    device: str,
    no_verify: bool,
    **decoding: Any,
) -> None:
    """Generate text from CHECKPOINT (a directory written by `charlm train`).

    \b
      charlm generate checkpoints/shakespeare --prompt "ROMEO:" --length 300 --temperature 0.8
      charlm generate checkpoints/shakespeare -p "ROMEO:" --strategy beam --beam-width 8 --stop '\\n\\n'
      charlm generate checkpoints/shakespeare --interactive
    """
    if as_json and interactive:
        raise ConfigError("--json and --interactive do not combine; drop one")
    options = DecodingOptions(**(decoding | {"stop": tuple(unescape(s) for s in decoding["stop"])}))
    dev = resolve_device(device)
    _warn_unused(click.get_current_context(), options)
    model, tokenizer, _ = load_for_inference(checkpoint, which=which, device=dev, verify=not no_verify)
    options.check_vocab(tokenizer.vocab_size)
    seed = secrets.randbelow(2**31) if seed is None else seed
    generator = torch.Generator(device=dev).manual_seed(seed)
    text = unescape(prompt)
    if interactive:
        from charlm.cli.repl import Repl  # the REPL's module imports this one

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
            "unk_masked": not options.allow_unk and tokenizer.unk_id is not None,
            "results": [r.to_dict() for r in results],
        }
        click.echo(json.dumps(payload, ensure_ascii=False))
        return
    try:
        continue_text(model, tokenizer, text, options, generator, echo_prompt=True)
    except KeyboardInterrupt:  # keep what was printed, end the line, exit like an interrupted shell command
        write("\n")
        note("[stopped]")
        raise click.exceptions.Exit(130) from None
    if options.effective_strategy == "sample":
        note(f"seed {seed}")


# ------------------------------------------------------------------ output
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


def _encode(tokenizer: Any, text: str):
    p = encode_prompt(tokenizer, text)
    warning = describe_unknown(tokenizer, p)
    if warning:
        warn(warning)
    return p


def continue_text(
    model: Any, tokenizer: Any, text: str, options: DecodingOptions, generator: torch.Generator, *, echo_prompt: bool
) -> None:
    """Generate from `text` and print it: streamed (one sample), a list of samples, or the n-best list."""
    p = _encode(tokenizer, text)
    prefix = text if echo_prompt else ""
    start = time.perf_counter()
    if options.effective_strategy != "beam" and options.num_samples == 1:
        s = stream(model, tokenizer, p, options, generator)
        write(prefix)
        last = prefix
        with contextlib.closing(s):  # a Ctrl-C while printing still gives the model its mode back
            for piece in s:
                write(piece)
                last = piece
        if not last.endswith("\n"):
            write("\n")  # the next output starts on its own line
        if s.result is not None:
            _stats(s.result.num_tokens, time.perf_counter() - start, s.result)
        return
    results = generate(model, tokenizer, p, options, generator)
    elapsed = time.perf_counter() - start
    beam = options.effective_strategy == "beam"
    if beam and not results:
        warn("beam search found no complete hypothesis")
    for i, r in enumerate(results, 1):
        if beam:
            head = f"#{i}  score {r.score:.4f}  log-prob {r.logprob:.2f}  {r.num_tokens} tokens  ({r.finish_reason})"
        else:
            head = f"sample {i}  log-prob {r.logprob:.2f}  {r.num_tokens} tokens  ({r.finish_reason})"
        console.rule(head, align="left", style="dim")
        body = prefix + r.text
        write(body if body.endswith("\n") else body + "\n")
    total = sum(r.num_tokens for r in results) if not beam else max((r.num_tokens for r in results), default=0)
    _stats(total, elapsed, None)


def _stats(tokens: int, seconds: float, result: Generation | None) -> None:
    rate = f", {tokens / seconds:,.0f} tokens/s" if seconds > 0 else ""
    extra = f", log-prob {result.logprob:.2f}, {result.finish_reason}" if result is not None else ""
    note(f"{tokens} tokens in {seconds:.2f}s{rate}{extra}")


def _warn_unused(ctx: click.Context, options: DecodingOptions) -> None:
    """Warn about options given on the command line that the chosen strategy does not read."""
    given = {n for n in ctx.params if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE}
    beam_only = ("beam_width", "length_penalty", "n_best", "exact_beam")
    unused = {
        "beam": ("temperature", "top_k", "top_p"),
        "greedy": ("top_k", "top_p", *beam_only) + (("temperature",) if options.strategy == "greedy" else ()),
        "sample": beam_only,
    }[options.effective_strategy]
    names = [f"--{n.replace('_', '-')}" for n in unused if n in given]
    if names:
        verb = "does" if len(names) == 1 else "do"
        warn(f"{', '.join(names)} {verb} not apply to {options.effective_strategy} decoding; ignored")
