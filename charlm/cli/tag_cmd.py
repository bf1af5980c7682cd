"""`charlm tag CKPT [FILE|-]`: tag a file (CoNLL-U, column or raw text) with a tagger checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import click

from charlm.api import load
from charlm.cli.common import DEVICE_HELP, domain_errors, err_console, read_input
from charlm.errors import CheckpointError
from charlm.tagging import OUTPUT_FORMATS, SequenceTagger, read_columns, read_conllu, read_raw, sniff, write_tagged

INPUTS = ("auto", "conllu", "column", "raw")
_DEFAULT_OUTPUT = {"conllu": "conllu", "column": "column", "raw": "slash"}


def load_tagger_handle(checkpoint: Path, which: str, device: str, verify: bool) -> SequenceTagger:
    """The tagger of CHECKPOINT, or a one-line error when it holds another kind of model."""
    model = load(checkpoint, which=which, device=device, verify=verify)
    if not isinstance(model, SequenceTagger):
        raise CheckpointError(f"{checkpoint} holds a language model, not a tagger; train one with --model tag")
    return model


@click.command("tag")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("file", default="-", type=click.Path(allow_dash=True, path_type=Path))
@click.option("--input", "input_format", type=click.Choice(INPUTS), default="auto", show_default=True,
              help="auto: CoNLL-U when the first token line has 10 tab-separated columns, else raw text "
                   "(one sentence per line); column: one token per line (first field), a blank line "
                   "between sentences.")  # fmt: skip
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS),
              help="conllu (the input's lines, tag column replaced), column (word TAB tag), slash (word/TAG), "
                   "json (words, tags, confidences per line) [default: the input's; slash for raw text].")  # fmt: skip
@click.option("--pretokenized", is_flag=True, help="Raw text: split words at whitespace only.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Sentences per batch.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which weights of the checkpoint.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--no-verify", is_flag=True, help="Load weights that do not match their recorded SHA-256 (damaged).")
@click.option("--quiet", "-q", is_flag=True, help="No summary line on stderr.")
@domain_errors
def tag_command(
    checkpoint: Path, file: Path, input_format: str, output_format: str | None, pretokenized: bool,
    batch_size: int, which: str, device: str, no_verify: bool, quiet: bool,
) -> None:  # fmt: skip
    """Tag FILE (default or -: standard input) with the tagger in CHECKPOINT; the tagged text goes to stdout.

    \b
    Examples:
      charlm tag checkpoints/ewt-pos sentences.txt
      charlm tag checkpoints/wnut-ner tweets.conll --input column --format json
    """
    tagger = load_tagger_handle(checkpoint, which, device, not no_verify)
    name = "standard input" if str(file) == "-" else str(file)
    text = read_input(file, "pass UTF-8 text")
    kind = input_format if input_format != "auto" else ("conllu" if sniff(text) == "conllu" else "raw")
    if kind == "conllu":
        sentences = read_conllu(text, name, tagger.vocab.column, require_tags=False)
    elif kind == "column":
        sentences = read_columns(text, name, require_tags=False)
    else:
        sentences = read_raw(text, pretokenized)
    t0 = time.perf_counter()
    tagged = tagger.predict([s.words for s in sentences], batch_size)
    seconds = time.perf_counter() - t0
    fmt = output_format or _DEFAULT_OUTPUT[kind]
    for line in write_tagged(sentences, tagged, fmt, tagger.vocab.column):
        click.echo(line)
    if not quiet:
        words = sum(len(s.words) for s in sentences)
        err_console.print(
            f"tagged {len(sentences):,} sentences, {words:,} words in {seconds:.2f}s "
            f"({words / max(seconds, 1e-9):,.0f} words/s)",
            highlight=False,
        )
