"""The `charlm` command line: one click group, each command in its own module.

Domain errors (`CharlmError`) become one-line `click.ClickException`s (exit 1);
usage errors are click's own (exit 2). Only this package knows about click and rich.
"""

from __future__ import annotations

import click

from charlm import __version__
from charlm.cli.classify_cmd import classify_command
from charlm.cli.evaluate_cmd import evaluate_command
from charlm.cli.generate_cmd import generate_command
from charlm.cli.perplexity_cmd import perplexity_command
from charlm.cli.plot_cmd import plot_command
from charlm.cli.score_cmd import score_command
from charlm.cli.serve_cmd import serve_command
from charlm.cli.tag_cmd import tag_command
from charlm.cli.train_cmd import train_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charlm")
def main() -> None:
    """Train recurrent language models on your own text, generate text, score lines, measure perplexity;
    train text classifiers on labelled data and label texts with them."""


for command in (
    train_command,
    generate_command,
    perplexity_command,
    score_command,
    plot_command,
    serve_command,
    tag_command,
    classify_command,
    evaluate_command,
):
    main.add_command(command)
