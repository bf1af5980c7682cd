"""`charlm evaluate CKPT FILE`: how well a task's model does on labelled data, by the checkpoint's task.

checkpoint.json's "task" picks the evaluator (`EVALUATORS`: a tagger, a classifier); a language model (no
task) is measured by `charlm perplexity`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from charlm.api import load
from charlm.checkpoint import open_checkpoint
from charlm.classify import FORMATS
from charlm.cli.classify_cmd import evaluate_classifier
from charlm.cli.common import DEVICE_HELP, domain_errors
from charlm.errors import CheckpointError, ConfigError
from charlm.tagging import report

_CLASSIFIER_ONLY = {"fmt": "--format", "text_column": "--text-column", "label_column": "--label-column", "png": "--png"}


def evaluate_tagger(checkpoint: Path, file: Path, options: dict[str, Any]) -> None:
    """Token accuracy, conlleval's entity figures (span tags) and the per-tag table of a CoNLL-U or column file."""
    given = [flag for name, flag in _CLASSIFIER_ONLY.items() if options.get(name)]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to a classifier; {checkpoint} holds a tagger: drop them")
    tagger = load(checkpoint, which=options["which"], device=options["device"], verify=not options["no_verify"])
    figures = tagger.evaluate(file)
    click.echo(json.dumps(figures.to_dict()) if options.get("as_json") else report(figures))


# task -> evaluate(checkpoint, file, options): prints the figures (tables, or JSON with --json)
EVALUATORS: dict[str, Callable[[Path, Path, dict[str, Any]], None]] = {
    "tag": evaluate_tagger,
    "classify": evaluate_classifier,
}


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Classifier: FILE's format [default: by extension].")
@click.option("--text-column", help="Classifier, csv/jsonl: the text's field [default: the training run's].")
@click.option("--label-column", help="Classifier, csv/jsonl: the label's field [default: the training run's].")
@click.option("--json", "as_json", is_flag=True, help="The figures as one JSON object; nothing else on stdout.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Classifier: draw the confusion matrix.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which weights of the checkpoint.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--no-verify", is_flag=True, help="Load weights that do not match their recorded SHA-256 (damaged).")
@domain_errors
def evaluate_command(checkpoint: Path, file: Path, **options: Any) -> None:
    """Score the model in CHECKPOINT on the labelled FILE. A tagger (CoNLL-U or column file): token accuracy,
    entity precision/recall/F1 (conlleval) and a per-tag report. A classifier: accuracy, macro-F1, per-class
    precision, recall and F1, and the confusion matrix (a table; a picture with --png).

    \b
    Examples:
      charlm evaluate checkpoints/ewt-pos corpora/ud-english-ewt/dev-slice.conllu
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
