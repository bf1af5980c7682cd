"""`charlm perplexity CKPT FILES...`: perplexity, bits per character and per byte of held-out files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from charlm.checkpoint import load_for_inference
from charlm.cli.common import DEVICE_HELP, console, domain_errors, err_console
from charlm.devices import resolve_device
from charlm.errors import CorpusError
from charlm.evaluate import (
    DEFAULT_SEGMENT,
    DEFAULT_STREAMS,
    DEFAULT_WARMUP,
    DEFAULT_WINDOW,
    TextScore,
    evaluate_file,
    total,
)

_UNKNOWN_WHAT = {
    "char": "characters never seen in training",
    "word": "out-of-vocabulary words",
    "subword": "unknown pieces",
}


@click.command("perplexity")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--exact", is_flag=True, help="Score each file as one stream: the reference figure, slower.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout, and nothing else.")
@click.option(
    "--streams",
    type=click.IntRange(1),
    default=DEFAULT_STREAMS,
    show_default=True,
    help="Parallel streams (each warmed on the tokens before it); 1 is --exact.",
)
@click.option(
    "--window", type=click.IntRange(1), default=DEFAULT_WINDOW, show_default=True, help="Tokens per forward call."
)
@click.option(
    "--which",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="Which weights of the checkpoint.",
)
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option(
    "--encoding-errors",
    type=click.Choice(["strict", "replace"]),
    default="strict",
    show_default=True,
    help="strict: a file that is not valid UTF-8 is an error; replace: bad bytes become U+FFFD.",
)
@click.pass_context
@domain_errors
def perplexity_command(
    ctx: click.Context,
    checkpoint: Path,
    files: tuple[Path, ...],
    exact: bool,
    as_json: bool,
    streams: int,
    window: int,
    which: str,
    device: str,
    encoding_errors: str,
) -> None:
    """Perplexity, bits per character and bits per byte of FILES under the model in CHECKPOINT.

    Each file is one continuous stream from the zero state, every token scored
    (the first after a line end), no dropout; for the word level a line end is
    <eos>. Tokens the model does not know are scored as <unk> and counted.
    The total row sums over all files (weighted by tokens). By default a file
    is split into parallel streams, each warmed up on the tokens before it;
    --exact gives the one-stream figure.
    """
    if exact and ctx.get_parameter_source("streams") == ParameterSource.COMMANDLINE and streams != 1:
        raise click.UsageError("--exact scores one stream; leave out --streams or drop --exact")
    exact = exact or streams == 1
    model, tokenizer, info = load_for_inference(checkpoint, which=which, device=resolve_device(device))
    opts = dict(
        exact=exact,
        streams=streams,
        window=window,
        warmup=DEFAULT_WARMUP,
        segment=DEFAULT_SEGMENT,
        errors=encoding_errors,
    )

    results: list[tuple[Path, TextScore | CorpusError]] = []
    for path in files:
        try:
            results.append((path, _evaluate_with_progress(model, tokenizer, path, opts, show=not as_json)))
        except CorpusError as exc:
            results.append((path, exc))

    scores = [r for _, r in results if isinstance(r, TextScore)]
    failed = len(results) - len(scores)
    summary = {
        "checkpoint": str(info.path),
        "which": which,
        "level": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "protocol": {
            "exact": exact,
            "streams": 1 if exact else streams,
            "window": window,
            "warmup": 0 if exact else DEFAULT_WARMUP,
            "segment": None if exact else DEFAULT_SEGMENT,
            "first_token": "scored after a line end",
        },
        "files": [
            {"path": str(p), **(r.to_dict() if isinstance(r, TextScore) else {"error": str(r)})} for p, r in results
        ],
        "total": total(scores).to_dict() if scores else None,
    }
    if as_json:
        click.echo(json.dumps(_finite(summary), indent=2, ensure_ascii=False, allow_nan=False))
    else:
        _print_report(summary, results, scores, tokenizer.kind)
    if failed:
        err_console.print(f"[red]error:[/] {failed} of {len(results)} files could not be evaluated (see the report)")
        ctx.exit(1)


def _evaluate_with_progress(model: Any, tokenizer: Any, path: Path, opts: dict[str, Any], show: bool) -> TextScore:
    """evaluate_file with a transient progress bar on stderr when it is a terminal."""
    if not (show and err_console.is_terminal and path.is_file()):
        return evaluate_file(model, tokenizer, path, **opts)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(escape(str(path)), total=path.stat().st_size)
        return evaluate_file(model, tokenizer, path, progress=lambda n: bar.advance(task, n), **opts)


def _print_report(summary: dict[str, Any], results: list[tuple[Path, Any]], scores: list[TextScore], kind: str) -> None:
    p = summary["protocol"]
    mode = (
        "exact: one stream per file"
        if p["exact"]
        else f"{p['streams']} streams x {p['segment']} tokens, warm-up {p['warmup']} (--exact: one stream)"
    )
    table = Table(
        title=(
            f"{escape(summary['checkpoint'])} ({summary['which']}), {kind} level, vocabulary {summary['vocab_size']:,}"
        ),
        caption=mode,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    longest = max(len(str(path)) for path, _ in results)
    # Only the file column folds on a narrow terminal; figures are never cut.
    table.add_column("file", overflow="fold", min_width=min(longest, 8))
    for name in ("tokens", "NLL\n(nats)", "perplexity", "bits/\nchar", "bits/\nbyte", "OOV"):
        table.add_column(name, justify="right", no_wrap=True)
    for path, r in results:
        if isinstance(r, TextScore):
            table.add_row(escape(str(path)), *_cells(r))
        else:
            table.add_row(escape(str(path)), "[red]error[/]", *[""] * 5)
    if scores and len(results) > 1:
        table.add_section()
        table.add_row("[bold]total[/]", *(f"[bold]{c}[/]" for c in _cells(total(scores))))
    console.print(table)
    for path, r in results:
        if isinstance(r, TextScore) and r.oov:
            shown = ", ".join(repr(u) for u in r.unknown[:10]) + (", ..." if len(r.unknown) > 10 else "")
            console.print(
                f"[yellow]note:[/] {escape(str(path))}: {r.oov:,} {_UNKNOWN_WHAT.get(kind, 'unknown tokens')} "
                f"scored as <unk> ({escape(shown)})",
                soft_wrap=True,
            )
        elif not isinstance(r, TextScore):
            console.print(f"[red]error:[/] {escape(str(r))}", soft_wrap=True)


def _cells(r: TextScore) -> list[str]:
    return [
        f"{r.tokens:,}",
        f"{r.nll:,.0f}",
        f"{r.perplexity:.3f}",
        f"{r.bits_per_char:.4f}",
        f"{r.bits_per_byte:.4f}",
        f"{r.oov:,} ({100 * r.oov_rate:.1f}%)",
    ]


def _finite(obj: Any) -> Any:
    """NaN and infinities -> null, so the output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
