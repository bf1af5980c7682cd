"""`charlm plot CKPT`: the loss curves of a run as a PNG, and drawn in the terminal."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.text import Text

from charlm.cli.common import console, domain_errors, err_console
from charlm.training import DEFAULT_HEIGHT, load_curves, render_terminal, write_png


@click.command("plot")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the PNG.  [default: CHECKPOINT/loss.png]",
)
@click.option(
    "--terminal/--no-terminal", default=True, help="Draw the curves on stdout as well.  [default: --terminal]"
)
@click.option(
    "--width", type=click.IntRange(1), default=None, help="Columns of the terminal drawing.  [default: the terminal's]"
)
@click.option(
    "--height", type=click.IntRange(1), default=DEFAULT_HEIGHT, show_default=True, help="Lines of the terminal drawing."
)
@domain_errors
def plot_command(checkpoint: Path, out: Path | None, terminal: bool, width: int | None, height: int) -> None:
    """Plot train and validation loss of the run in CHECKPOINT from its metrics.jsonl.

    Writes a PNG with loss against optimiser steps and against elapsed time
    (its path goes to stderr) and draws loss against steps on stdout.
    """
    path = write_png(checkpoint, out)
    err_console.print(f"wrote {escape(str(path))}", soft_wrap=True)
    if terminal:
        text = Text("\n".join(render_terminal(load_curves(checkpoint), width or console.width, height)))
        # Colour tells the two curves apart where the terminal has it; the glyphs do elsewhere.
        text.highlight_regex("[\u2801-\u28ff]+", "cyan")
        text.highlight_regex("●", "dark_orange")
        text.highlight_regex("◆", "bold red")
        console.print(text, soft_wrap=True)  # never re-wrapped by rich: the drawing is sized to `width` already
