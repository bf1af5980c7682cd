"""`charlm evaluate CKPT FILE`: how well a task's model does on a labelled file, by the checkpoint's task.

The figures depend on the task (checkpoint.json's "task"): each has one function in EVALUATORS. A
language model (no task) is measured by `charlm perplexity`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from charlm.api import load
from charlm.checkpoint import open_checkpoint
from charlm.cli.common import DEVICE_HELP, domain_errors
from charlm.errors import CheckpointError
from charlm.tagging import report


def evaluate_tagger(checkpoint: Path, file: Path, as_json: bool, which: str, device: str, verify: bool) -> None:
    """Token accuracy, conlleval's entity figures (span tags) and the per-tag table."""
    tagger = load(checkpoint, which=which, device=device, verify=verify)
    figures = tagger.evaluate(file)
    click.echo(json.dumps(figures.to_dict()) if as_json else report(figures))


# checkpoint.json's "task" -> how its model is evaluated
EVALUATORS: dict[str, Callable[[Path, Path, bool, str, str, bool], None]] = {"tag": evaluate_tagger}


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The figures as one JSON object.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which weights of the checkpoint.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--no-verify", is_flag=True, help="Load weights that do not match their recorded SHA-256 (damaged).")
@domain_errors
def evaluate_command(checkpoint: Path, file: Path, as_json: bool, which: str, device: str, no_verify: bool) -> None:
    """Evaluate the model in CHECKPOINT on the labelled FILE (a tagger: CoNLL-U or column file).

    \b
    Example:
      charlm evaluate checkpoints/ewt-pos corpora/ud-english-ewt/dev-slice.conllu
    """
    task = open_checkpoint(checkpoint).meta.get("task")
    if task is None:
        raise CheckpointError(
            f"{checkpoint} holds a language model; measure it with charlm perplexity {checkpoint} FILE"
        )
    if task not in EVALUATORS:
        raise CheckpointError(f"{checkpoint} holds a model for the task {task!r}, which this charlm cannot evaluate")
    EVALUATORS[task](checkpoint, file, as_json, which, device, not no_verify)
