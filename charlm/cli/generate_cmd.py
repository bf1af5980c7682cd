"""`charlm generate`: text from a checkpoint, one-shot or as an interactive REPL.

Sampling streams to stdout as it is produced; beam search prints the n-best
list with scores; `--json` prints one JSON object and nothing else on stdout.
Warnings, progress and statistics go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from charlm.api import load_language_model, random_seed
from charlm.cli.common import DEVICE_HELP, domain_errors, option_table, read_input
from charlm.cli.repl import Repl
from charlm.cli.terminal import continue_text, note, unescape, warn, write
from charlm.errors import ConfigError
from charlm.runtime import resolve_device
from charlm.sampling import MAX_BEAM_WIDTH, MAX_NEW_TOKENS, MAX_SAMPLES, STRATEGIES, DecodingOptions
from charlm.training import MAX_SEED

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
    ("--repetition-penalty", dict(type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                                  help="All strategies: a token already generated has a positive logit divided "
                                       "by this, a negative one multiplied (Keskar et al.); 1 is off, 1.2 typical.")),
    ("--presence-penalty", dict(type=click.FloatRange(-2, 2), default=0.0, show_default=True,
                                help="All strategies: logit -= this for each token generated at least once.")),
    ("--frequency-penalty", dict(type=click.FloatRange(-2, 2), default=0.0, show_default=True,
                                 help="All strategies: logit -= this x the times the token was generated.")),
    ("--no-repeat-ngram-size", dict(type=click.IntRange(min=1),
                                    help="All strategies: never generate the same n tokens twice.")),
    ("--min-p", dict(type=click.FloatRange(0, 1, min_open=True),
                     help="Sampling: draw only tokens at least this fraction as likely as the most likely one.")),
    ("--typical-p", dict(type=click.FloatRange(0, 1, min_open=True),
                         help="Sampling: locally typical sampling; keep the tokens whose surprisal is closest to "
                              "the entropy, up to this much probability.")),
    ("--min-new-tokens", dict(type=click.IntRange(min=0), default=0, show_default=True,
                              help="All strategies: before this many tokens, <eos>, a counted line end and a stop "
                                   "string cannot end the text (their tokens are masked).")),
    ("--ban", dict(multiple=True,
                   help=r"All strategies: never generate this string, even across tokens (repeatable; \n is "
                        "understood; word and subword models: as the tokenizer spells it).")),
]
# fmt: on


@click.command("generate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--prompt", "-p", default="", help=r"Text to continue (\n and \t are understood). Default: a line start.")
@click.option(
    "--prompt-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Continue the text of this UTF-8 file ('-': standard input), read as it is (no escapes); not with --prompt.",
)
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
    prompt_file: Path | None,
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
      charlm generate checkpoints/shakespeare --prompt-file opening.txt --length 500
      charlm generate checkpoints/shakespeare --interactive
    """
    if as_json and interactive:
        raise ConfigError("--json and --interactive do not combine; drop one")
    unescaped = {name: tuple(unescape(s) for s in decoding[name]) for name in ("stop", "ban")}
    options = DecodingOptions(**(decoding | unescaped))
    dev = resolve_device(device)
    _warn_unused(click.get_current_context(), options)
    lm = load_language_model(checkpoint, which=which, device=dev, verify=not no_verify)
    lm.decoding(options)  # the checks that need the vocabulary, before anything runs
    seed = random_seed() if seed is None else seed
    text = _prompt_text(prompt, prompt_file)
    if interactive:
        Repl(lm, options, seed).run(first=text or None)
        return
    if as_json:
        found = lm.generate(text, options, seed=seed)
        if found.warning:
            warn(found.warning)
        click.echo(json.dumps({"checkpoint": str(checkpoint), **found.to_dict()}, ensure_ascii=False))
        return
    try:
        continue_text(lm, text, options, seed, echo_prompt=True)
    except KeyboardInterrupt:  # keep what was printed, end the line, exit like an interrupted shell command
        write("\n")
        note("[stopped]")
        raise click.exceptions.Exit(130) from None
    if options.effective_strategy == "sample":
        note(f"seed {seed}")


def _prompt_text(prompt: str, prompt_file: Path | None) -> str:
    """The prompt: --prompt with its escapes read, or the text of --prompt-file as it is."""
    if prompt_file is None:
        return unescape(prompt)
    if prompt:
        raise ConfigError("--prompt and --prompt-file do not combine; drop one")
    return read_input(prompt_file, "pass a UTF-8 text file as --prompt-file")


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
