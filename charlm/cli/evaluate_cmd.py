"""`charlm evaluate CKPT FILE`: how well a task's model does on labelled data, by the checkpoint's task.

checkpoint.json's "task" picks the evaluator (`EVALUATORS`); a language model (no task) is measured by
`charlm perplexity`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from charlm.checkpoint import open_checkpoint
from charlm.classify import FORMATS
from charlm.cli.classify_cmd import evaluate_classifier
from charlm.cli.common import DEVICE_HELP, domain_errors
from charlm.errors import CheckpointError

# task -> evaluate(checkpoint, file, options): prints the figures (tables, or JSON with --json)
EVALUATORS: dict[str, Callable[[Path, Path, dict[str, Any]], None]] = {"classify": evaluate_classifier}


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="FILE's format [default: by extension].")
@click.option("--text-column", help="csv/jsonl: the text's field [default: the training run's].")
@click.option("--label-column", help="csv/jsonl: the label's field [default: the training run's].")
@click.option("--json", "as_json", is_flag=True, help="The figures as one JSON object; nothing else on stdout.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Also draw the confusion matrix here.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which weights of the checkpoint.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--no-verify", is_flag=True, help="Load weights that do not match their recorded SHA-256 (damaged).")
@domain_errors
def evaluate_command(checkpoint: Path, file: Path, **options: Any) -> None:
    """Score the model in CHECKPOINT on the labelled FILE: accuracy, macro-F1, per-class precision, recall
    and F1, and the confusion matrix (a table; a picture with --png).

    \b
    Example:
      charlm evaluate checkpoints/reviews corpora/rt-polarity-sample/dev.tsv --png confusion.png
    """
    task = open_checkpoint(checkpoint).meta.get("task")
    if task is None:
        raise CheckpointError(
            f"{checkpoint} holds a language model; measure it with `charlm perplexity {checkpoint} FILE`"
        )
    if task not in EVALUATORS:
        raise CheckpointError(f"{checkpoint} holds a model for the task {task!r}, which this charlm cannot evaluate")
    EVALUATORS[task](checkpoint, file, options)
