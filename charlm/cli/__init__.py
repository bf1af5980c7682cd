"""The `charlm` command line: one click group, each command in its own module.

Domain errors (`CharlmError`) become one-line `click.ClickException`s (exit 1);
usage errors are click's own (exit 2). Only this package knows about click and rich.
"""

from __future__ import annotations

import click

from charlm import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charlm")
def main() -> None:
    """Train recurrent language models on your own text, generate text, measure perplexity."""


def _register() -> None:
    # Each command lives in its own module; importing registers it on `main`.
    from charlm.cli import generate_cmd, perplexity_cmd, train_cmd  # noqa: F401


_register()
