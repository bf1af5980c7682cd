"""`charlm score`: how likely each line of a file (or of standard input) is under a model.

Each line is scored as `charlm.load(...).score` scores a text: its own stream from the zero state, read
after a line end, its line end not scored. The lines are scored as batches (`charlm.evaluation.score_lines`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from charlm.api import TokenScores, load_language_model
from charlm.cli.common import DEVICE_HELP, console, domain_errors, read_input
from charlm.cli.terminal import note, warn

_UNITS = {"char": "character", "word": "word"}


@click.command("score")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("file", default="-", type=click.Path(allow_dash=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per scored line (input order, or ranked with --sort); nothing else.")  # fmt: skip
@click.option("--sort", is_flag=True, help="Rank the lines: highest mean log-probability per token first.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which weights of the checkpoint.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--no-verify", is_flag=True, help="Load weights that do not match their recorded SHA-256 (damaged).")
@domain_errors
def score_command(
    checkpoint: Path, file: Path, as_json: bool, sort: bool, which: str, device: str, no_verify: bool
) -> None:
    """The log-probability of each line of FILE (default or -: standard input) under the model in CHECKPOINT.

    For each line: its total log-probability (nats), the mean per token, the perplexity per token
    (exp of minus the mean) and the number of tokens. Each line is read on its own, from the zero state,
    as if it started a line; its line end is not scored. Empty lines are skipped (and counted on stderr);
    the `line` column and JSON field give each line's number in the input. Units the model never saw
    are scored as <unk>, with a warning.

    \b
    Examples:
      charlm score checkpoints/tinyshakespeare candidates.txt --sort
      printf 'To be, or not to be\\nTo be, or not to bee\\n' | charlm score checkpoints/tinyshakespeare --json
    """
    text = read_input(file, "pass UTF-8 text, one candidate per line")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the last line's end, or an empty input
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line]
    skipped = len(lines) - len(numbered)
    lm = load_language_model(checkpoint, which=which, device=device, verify=not no_verify)
    scores = lm.score([line for _, line in numbered])
    rows = list(zip((n for n, _ in numbered), scores))
    if sort:
        rows.sort(key=lambda r: -r[1].mean)  # stable: ties keep input order
    unknown = [s for _, s in rows if s.unknown]
    if unknown:
        units = list(dict.fromkeys(u for s in unknown for u in s.unknown))
        noun = _UNITS.get(lm.level, "piece")
        shown = ", ".join(repr(u) for u in units[:10]) + (f" and {len(units) - 10} more" if len(units) > 10 else "")
        warn(
            f"{len(unknown)} {'lines have' if len(unknown) != 1 else 'line has'} {len(units)} {noun}"
            f"{'s' if len(units) != 1 else ''} outside the vocabulary ({shown}); read as <unk>"
        )
    if skipped:
        note(f"skipped {skipped} empty line{'s' if skipped != 1 else ''}")
    if not rows:
        note("no lines to score")
    if as_json:
        for n, s in rows:
            click.echo(json.dumps(_record(n, s), ensure_ascii=False, allow_nan=False))
    else:
        _table(f"{checkpoint} ({which}), {lm.level} level", rows, sort)


def _record(line: int, s: TokenScores) -> dict[str, Any]:
    return {
        "line": line,
        "text": s.text,
        "logprob": s.logprob,
        "mean": s.mean,
        "perplexity": s.perplexity if math.isfinite(s.perplexity) else None,
        "tokens": len(s.ids),
        "unknown": list(s.unknown),
    }


def _table(title: str, rows: list[tuple[int, TokenScores]], sort: bool) -> None:
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False)
    if sort:
        table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("line", justify="right", no_wrap=True)
    for name in ("logprob", "mean", "perplexity", "tokens"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("text", overflow="fold")
    for rank, (n, s) in enumerate(rows, 1):
        cells = [f"{n:,}", f"{s.logprob:.3f}", f"{s.mean:.4f}", f"{s.perplexity:.3f}", f"{len(s.ids):,}"]
        table.add_row(*([f"{rank:,}"] if sort else []), *cells, escape(s.text))
    console.print(table)
