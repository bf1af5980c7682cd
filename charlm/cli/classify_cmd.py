"""`charlm classify CKPT [FILE|-]`: label each text of a file with a trained classifier, with probabilities;
and the classifier's part of `charlm evaluate` (`evaluate_classifier`).

Texts are one a line (plain lines), or the text column of a TSV, CSV, JSON lines or fastText file
(`--format`, by extension otherwise). Output: a table (default), TSV with a header (line, label,
one probability column per label, text), or JSON lines (line, text, label, labels, probabilities).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from charlm.api import Classifier, Report, load
from charlm.classify import (
    INPUT_FORMATS,
    Columns,
    confusion_rows,
    guess_format,
    parse_examples,
    read_examples,
    table_rows,
    write_confusion_png,
)
from charlm.cli.common import DEVICE_HELP, console, domain_errors, read_input
from charlm.cli.terminal import note
from charlm.errors import CheckpointError

OUTPUTS = ("table", "tsv", "jsonl")


def load_classifier_at(checkpoint: Path, which: str, device: str, verify: bool) -> Classifier:
    model = load(checkpoint, which=which, device=device, verify=verify)
    if not isinstance(model, Classifier):
        raise CheckpointError(
            f"{checkpoint} holds a language model, not a classifier; train one with "
            "`charlm train DATA --model classify`"
        )
    return model


def columns_of(clf: Classifier, text_column: str | None, label_column: str | None) -> Columns:
    """The columns given, else the ones the classifier was trained with."""
    own = clf.columns()
    return Columns(text_column or own.text, label_column or own.label, own.label_separator)


@click.command("classify")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("file", default="-", type=click.Path(allow_dash=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(INPUT_FORMATS),
              help="How FILE holds its texts [default: by extension; plain lines otherwise].")  # fmt: skip
@click.option("--text-column", help="csv/jsonl: the field holding the text [default: the training run's].")
@click.option("--output", "-o", type=click.Choice(OUTPUTS), default="table", show_default=True,
              help="table, TSV (a probability column per label) or JSON lines.")  # fmt: skip
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which weights of the checkpoint.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--no-verify", is_flag=True, help="Load weights that do not match their recorded SHA-256 (damaged).")
@domain_errors
def classify_command(
    checkpoint: Path, file: Path, fmt: str | None, text_column: str | None, output: str, which: str, device: str,
    no_verify: bool,
) -> None:  # fmt: skip
    """Label each text of FILE (default or -: standard input) with the classifier in CHECKPOINT.

    Each text gets its most probable label and the probability of every label (multi-label models: every
    label at 0.5 or more). Empty lines are skipped; `line` is the text's line in FILE.

    \b
    Examples:
      charlm classify checkpoints/reviews new-reviews.txt
      charlm classify checkpoints/tickets tickets.csv --text-column body --output jsonl
      echo "a gorgeous, witty film" | charlm classify checkpoints/reviews
    """
    name = "standard input" if str(file) == "-" else str(file)
    text = read_input(file, "pass UTF-8 text, one text a line (or a TSV, CSV or JSON lines file)")
    fmt = fmt or guess_format(name, text, default="lines")
    clf = load_classifier_at(checkpoint, which, device, not no_verify)
    examples = parse_examples(text, name, fmt, columns_of(clf, text_column, None), labelled=False)
    texts = [e.text for e in examples]
    probs = clf.probabilities(texts)
    predictions = clf.predictions(texts, probs) if output != "tsv" else []
    labels = clf.labels
    if not examples:
        note("no texts to classify")
    if output == "tsv":
        click.echo("\t".join(["line", "label", *(f"p({x})" for x in labels), "text"]))
        for e, row in zip(examples, probs.tolist()):
            best = labels[max(range(len(labels)), key=lambda k: row[k])]
            click.echo("\t".join([str(e.line), best, *(f"{p:.4f}" for p in row), e.text.replace("\t", " ")]))
    elif output == "jsonl":
        for e, p in zip(examples, predictions):
            click.echo(json.dumps({"line": e.line, **p.to_dict()}, ensure_ascii=False))
    else:
        table = Table(
            title=escape(f"{checkpoint} ({which}): {len(texts):,} text{'s' if len(texts) != 1 else ''}"),
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for column, justify in (("line", "right"), ("label", "left"), ("p", "right"), ("next", "left")):
            table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        table.add_column("text", overflow="fold")
        for e, p in zip(examples, predictions):
            ranked = list(p.probabilities.items())
            shown = ", ".join(escape(x) for x in p.labels) if clf.multi_label else escape(p.label)
            runner = f"{escape(ranked[1][0])} {ranked[1][1]:.3f}" if len(ranked) > 1 else ""
            table.add_row(f"{e.line:,}", shown, f"{ranked[0][1]:.3f}", runner, escape(e.text))
        console.print(table)


def evaluate_classifier(checkpoint: Path, file: Path, options: dict[str, Any]) -> None:
    """`charlm evaluate` for a classifier: figures of FILE's labelled texts, as tables or JSON; the confusion
    matrix also as a PNG with --png."""
    clf = load_classifier_at(checkpoint, options["which"], options["device"], not options["no_verify"])
    columns = columns_of(clf, options.get("text_column"), options.get("label_column"))
    r = clf.evaluate(read_examples(file, options.get("fmt"), columns, labelled=True))
    if options.get("png"):
        path = write_confusion_png(r, options["png"], f"{checkpoint.name} on {file.name}: accuracy {r.accuracy:.3f}, "
                                   f"macro-F1 {r.macro_f1:.3f} ({r.examples:,} texts)")  # fmt: skip
        note(f"confusion matrix: {path}")
    if options.get("as_json"):
        click.echo(json.dumps({"checkpoint": str(checkpoint), "file": str(file), **r.to_dict()}))
        return
    print_report(r, f"{checkpoint} on {file}")


def print_report(r: Report, title: str) -> None:
    """The figures as tables: a summary line, per-class precision/recall/F1, then the confusion matrix."""
    micro = f", micro-F1 {r.micro_f1:.4f}" if r.multi_label else ""
    exact = "exact-match accuracy" if r.multi_label else "accuracy"
    loss = f", loss {r.loss:.4f}" if r.loss is not None else ""
    console.print(
        f"{escape(title)}: {r.examples:,} texts, {exact} {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}{micro}{loss}"
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("label", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for row in table_rows(r):
        table.add_row(*(escape(x) for x in row))
    console.print(table)
    if r.confusion is not None:
        rows = confusion_rows(r)
        cm = Table(title="confusion matrix (rows: gold, columns: predicted)", box=box.SIMPLE_HEAD, pad_edge=False)
        for i, header in enumerate(rows[0]):
            cm.add_column(escape(header), justify="left" if i == 0 else "right")
        for row in rows[1:]:
            cm.add_row(*(escape(x) for x in row))
        console.print(cm)
