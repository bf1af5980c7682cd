"""`charlm perplexity CKPT FILES...`: perplexity, bits per character and per byte of held-out files."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from charlm.checkpoint import CheckpointInfo, load_for_inference, tokenizer_fingerprint
from charlm.cli.common import DEVICE_HELP, console, domain_errors, err_console, option_table
from charlm.errors import CharlmError, ConfigError, CorpusError
from charlm.evaluation import (
    DEFAULT_STREAMS,
    DEFAULT_WARMUP,
    DEFAULT_WINDOW,
    DYNAMIC_LR,
    DYNAMIC_SEGMENT,
    RMS_DECAY,
    RMS_LR,
    RULES,
    DynamicOptions,
    Report,
    Scoring,
    Source,
    TextScore,
    context_id,
    dynamic_report,
    dynamic_statistics,
    mixture_report,
    mixture_weight,
    perplexity_report,
)
from charlm.models import LanguageModel
from charlm.runtime import resolve_device
from charlm.training import TrainConfig, memory, prepare_data

_FIGURES = ("tokens", "NLL\n(nats)", "perplexity", "bits/\nchar", "bits/\nbyte", "OOV")
_UNKNOWN_WHAT = {
    "char": "characters never seen in training",
    "word": "out-of-vocabulary words",
    "subword": "unknown pieces",
}


# fmt: off
OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--exact", dict(is_flag=True, help="Score each file as one stream: the reference figure, slower.")),
    ("--json as_json", dict(is_flag=True, help="Print the results as JSON on stdout, and nothing else.")),
    ("--streams", dict(type=click.IntRange(1), default=DEFAULT_STREAMS, show_default=True,
                       help="Parallel streams (each warmed on the tokens before it); 1 is --exact.")),
    ("--window", dict(type=click.IntRange(1), default=DEFAULT_WINDOW, show_default=True,
                      help="Tokens per forward call.")),
    ("--which", dict(type=click.Choice(["best", "last"]), default="best", show_default=True,
                     help="Which weights of the checkpoint.")),
    ("--device", dict(default="auto", show_default=True, help=DEVICE_HELP)),
    ("--no-verify", dict(is_flag=True, help="Load weights that do not match their recorded SHA-256 (damaged).")),
    ("--interpolate", dict(metavar="CKPT[:WEIGHT]",
                           help="Also score with a mixture (1-WEIGHT) p + WEIGHT p' of CHECKPOINT and this one "
                                "(same tokenizer); without WEIGHT it is chosen on CHECKPOINT's validation text.")),
    ("--dynamic", dict(is_flag=True,
                       help="Also score with dynamic evaluation: a gradient step after each segment.")),
    ("--dynamic-segment", dict(type=click.IntRange(1), default=DYNAMIC_SEGMENT, show_default=True,
                               help="--dynamic: tokens per segment (one step each).")),
    ("--dynamic-lr", dict(type=click.FloatRange(0), default=None,
                          help=f"--dynamic: step size (0: the static figure) [default: {DYNAMIC_LR:g} for sgd, "
                               f"{RMS_LR:g} for rms].")),
    ("--dynamic-rule", dict(type=click.Choice(list(RULES)), default="sgd", show_default=True,
                            help="--dynamic: sgd, or rms (Krause et al.: steps divided by the gradient's RMS on the "
                                 "run's training text, decay toward the trained weights).")),
    ("--encoding-errors", dict(type=click.Choice(["strict", "replace"]), default="strict", show_default=True,
                               help="strict: a file that is not valid UTF-8 is an error; "
                                    "replace: bad bytes become U+FFFD.")),
]
# fmt: on


@click.command("perplexity")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@option_table(OPTIONS)
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
    no_verify: bool,
    interpolate: str | None,
    dynamic: bool,
    dynamic_segment: int,
    dynamic_lr: float | None,
    dynamic_rule: str,
    encoding_errors: str,
) -> None:
    """Perplexity, bits per character and bits per byte of FILES under the model in CHECKPOINT.

    Each file is one continuous stream from the zero state, every token scored
    (the first after a line end), no dropout; for the word level a line end is
    <eos>. Tokens the model does not know are scored as <unk> and counted.
    The total row sums over all files (weighted by tokens). By default a file
    is split into parallel streams, each warmed up on the tokens before it;
    --exact gives the one-stream figure (Kneser-Ney models are always scored
    exactly).

    --interpolate and --dynamic report figures side by side: each model alone
    and their mixture, or the static and the dynamic figure (the checkpoint on
    disk never changes). Each model alone, and the static figure, are scored as
    above (parallel streams unless --exact); the dynamic one is one stream.

    \b
    Examples:
      charlm perplexity checkpoints/shakespeare held-out.txt --interpolate checkpoints/shakespeare-kn
      charlm perplexity checkpoints/shakespeare held-out.txt --dynamic
    """
    _check_usage(ctx, exact, streams, interpolate, dynamic)
    dev = resolve_device(device)
    model, tokenizer, info = load_for_inference(checkpoint, which=which, device=dev, verify=not no_verify)
    _warn_if_backward(info)
    scoring = Scoring(exact=exact or streams == 1 or model.exact_only, streams=streams, window=window)
    _check_memory(model, files, dev, None if scoring.exact else streams, dynamic_segment if dynamic else None)
    each = functools.partial(_with_progress, show=not as_json)
    source = Source(str(info.path), which, model, tokenizer, scoring, encoding_errors, each)
    if interpolate:
        report = _interpolated(source, info, interpolate, files, verify=not no_verify)
    elif dynamic:
        report = _dynamic(source, info, _dynamic_options(dynamic_segment, dynamic_lr, dynamic_rule), files)
    else:
        report = perplexity_report(source, files)
    _show(report, as_json)
    if report.failed:
        err_console.print(
            f"[red]error:[/] {report.failed} of {len(files)} files could not be evaluated (see the report)"
        )
        ctx.exit(1)


def _warn_if_backward(info: CheckpointInfo) -> None:
    """A backward LM (train --reverse) was validated on reversed text; this command scores files as written."""
    data = info.train_config.get("data")
    if isinstance(data, dict) and data.get("reverse"):
        err_console.print(
            "[yellow]warning:[/] a backward LM (trained with --reverse): this scores the files as written; "
            "charlm.load(CKPT).perplexity(FILE) reads them backwards, as it was trained",
            soft_wrap=True,
        )


def _check_usage(ctx: click.Context, exact: bool, streams: int, interpolate: str | None, dynamic: bool) -> None:
    """The combinations of options that cannot go together (usage errors: exit 2)."""
    if exact and ctx.get_parameter_source("streams") == ParameterSource.COMMANDLINE and streams != 1:
        raise click.UsageError("--exact scores one stream; leave out --streams or drop --exact")
    for name in ("dynamic_segment", "dynamic_lr", "dynamic_rule"):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE and not dynamic:
            raise click.UsageError(f"--{name.replace('_', '-')} applies to --dynamic only; add --dynamic or drop it")
    if dynamic and interpolate:
        raise click.UsageError("--dynamic and --interpolate cannot be combined; choose one")


def _check_memory(
    model: LanguageModel, files: tuple[Path, ...], device: Any, streams: int | None, dynamic_segment: int | None
) -> None:
    """Refuse --streams or --dynamic-segment beyond what the device holds (`charlm.training.memory`).

    A file of n bytes has at most n tokens: that bounds the streams scoring uses
    (each segment at least a warm-up long) and the segment dynamic evaluation
    takes, so a large value is refused only for a file long enough to use it.
    """
    if model.exact_only:
        return  # a Kneser-Ney model: scored as one stream, token by token, and no weights to adapt
    shape: Any = model.config  # a recurrent model's (`training.memory` sizes its layers)
    longest = max((p.stat().st_size for p in files if p.is_file()), default=0)
    if streams is not None:
        used = min(streams, max(1, longest // DEFAULT_WARMUP))
        need = memory.scoring_bytes(shape, used)
        memory.require(need, device, f"scoring {used:,} parallel streams", "use fewer --streams (or --exact)")
    if dynamic_segment is not None:
        used = min(dynamic_segment, max(1, longest))
        need = memory.dynamic_bytes(shape, used)
        doing = f"dynamic evaluation in segments of {used:,} tokens"
        memory.require(need, device, doing, "use a smaller --dynamic-segment")


def _with_progress(path: Path, run: Callable[[Callable[[int], None] | None], Any], show: bool) -> Any:
    """run(progress) with a transient progress bar on stderr when it is a terminal (run(None) otherwise)."""
    if not (show and err_console.is_terminal and path.is_file()):
        return run(None)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(escape(str(path)), total=path.stat().st_size)
        return run(lambda n: bar.advance(task, n))


def _interpolated(source: Source, info: CheckpointInfo, spec: str, files: tuple[Path, ...], verify: bool) -> Report:
    """--interpolate: the checkpoint's model, the other one, and their mixture (its weight given or chosen)."""
    path, weight = _parse_interpolate(spec)
    other, other_tok, other_info = load_for_inference(path, device=source.model.device, verify=verify)
    if tokenizer_fingerprint(other_tok) != tokenizer_fingerprint(source.tokenizer):
        raise ConfigError(
            f"{other_info.path} has another tokenizer than {info.path}; "
            "interpolate models trained with the same tokenizer (same corpus, level and options)"
        )
    chosen = "given"
    if weight is None:
        hint = f"give the weight as --interpolate {path}:0.5"
        try:
            config = TrainConfig.from_dict(info.train_config)
        except (CharlmError, TypeError):
            raise ConfigError(f"{info.path} records no training corpus to choose a weight on; {hint}") from None
        try:
            data = prepare_data(config, source.tokenizer)
        except CorpusError as exc:
            raise ConfigError(f"cannot read the run's validation text ({exc}); {hint}") from None
        context = context_id(source.tokenizer)
        limit = config.run.eval_tokens or None
        weight, chosen = mixture_weight(
            source.model, other, data.valid_ids, context, source.scoring, max_tokens=limit, run=str(info.path)
        )
    return mixture_report(source, other, files, weight, other_path=str(other_info.path), chosen=chosen)


def _dynamic_options(segment: int, lr: float | None, rule: str) -> DynamicOptions:
    """--dynamic-*: the step size defaults by rule; the RMS rule decays toward the trained weights."""
    rms = rule == "rms"
    step = lr if lr is not None else (RMS_LR if rms else DYNAMIC_LR)
    return DynamicOptions(lr=step, segment=segment, decay=RMS_DECAY if rms else 0.0, rule=rule)


def _dynamic(source: Source, info: CheckpointInfo, options: DynamicOptions, files: tuple[Path, ...]) -> Report:
    """--dynamic: the static and the dynamic figure; the RMS rule's statistics from the run's training text."""
    rms, where = None, ""
    if options.rule == "rms":
        try:
            data = prepare_data(TrainConfig.from_dict(info.train_config), source.tokenizer)
        except (CharlmError, TypeError) as exc:
            raise ConfigError(
                f"cannot read {info.path}'s training text for --dynamic-rule rms ({exc}); use --dynamic-rule sgd"
            ) from None
        rms, where = dynamic_statistics(source.model, data.train_ids, options.segment)
    return dynamic_report(source, files, options, rms, where)


def _show(report: Report, as_json: bool) -> None:
    """The report as JSON on stdout, or as a table (one figure per file, or the figures side by side)."""
    if as_json:
        click.echo(json.dumps(_finite(report.to_dict()), indent=2, ensure_ascii=False, allow_nan=False))
    elif report.keys:
        _print_comparison(report)
    else:
        _print_report(report)


def _print_report(report: Report) -> None:
    kind = report.level
    table = Table(
        title=f"{escape(report.checkpoint)} ({report.which}), {kind} level, vocabulary {report.vocab_size:,}",
        caption=_mode(report.scoring),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    longest = max(len(str(f.path)) for f in report.files)
    # Only the file column folds on a narrow terminal; figures are never cut.
    table.add_column("file", overflow="fold", min_width=min(longest, 8))
    for name in _FIGURES:
        table.add_column(name, justify="right", no_wrap=True)
    for f in report.files:
        table.add_row(escape(str(f.path)), *(_cells(f.scores[0]) if f.error is None else ["[red]error[/]", *[""] * 5]))
    if report.totals and len(report.files) > 1:
        table.add_section()
        table.add_row("[bold]total[/]", *(f"[bold]{c}[/]" for c in _cells(report.totals[0])))
    console.print(table)
    for f in report.files:
        if f.error is not None:
            console.print(f"[red]error:[/] {escape(f.error)}", soft_wrap=True)
        elif f.scores[0].oov:
            r = f.scores[0]
            shown = ", ".join(repr(u) for u in r.unknown[:10]) + (", ..." if len(r.unknown) > 10 else "")
            console.print(
                f"[yellow]note:[/] {escape(str(f.path))}: {r.oov:,} {_UNKNOWN_WHAT.get(kind, 'unknown tokens')} "
                f"scored as <unk> ({escape(shown)})",
                soft_wrap=True,
            )


def _print_comparison(report: Report) -> None:
    table = Table(
        title=f"{escape(report.checkpoint)}, {report.level} level, vocabulary {report.vocab_size:,}",
        caption=escape(report.note) + "; " + _mode(report.scoring),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("file", overflow="fold", min_width=8)
    table.add_column("model", overflow="fold")
    for name in _FIGURES:
        table.add_column(name, justify="right", no_wrap=True)
    for f in report.files:
        if f.error is not None:
            table.add_row(escape(str(f.path)), "", "[red]error[/]", *[""] * 5)
            continue
        for i, (label, sc) in enumerate(zip(report.labels, f.scores)):
            table.add_row(escape(str(f.path)) if i == 0 else "", escape(label), *_cells(sc))
        table.add_section()
    if report.totals and len(report.files) > 1:
        for i, (label, sc) in enumerate(zip(report.labels, report.totals)):
            table.add_row("[bold]total[/]" if i == 0 else "", escape(label), *(f"[bold]{c}[/]" for c in _cells(sc)))
    console.print(table)
    for f in report.files:
        if f.error is not None:
            console.print(f"[red]error:[/] {escape(f.error)}", soft_wrap=True)


def _mode(scoring: Scoring) -> str:
    if scoring.exact:
        return "exact: one stream per file"
    return f"{scoring.streams} streams x {scoring.segment} tokens, warm-up {scoring.warmup} (--exact: one stream)"


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


def _parse_interpolate(spec: str) -> tuple[Path, float | None]:
    """ "CKPT" or "CKPT:WEIGHT" (the last colon separates the weight, so a path may hold colons)."""
    head, sep, tail = spec.rpartition(":")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            return Path(spec), None
        if not 0.0 <= weight <= 1.0:
            raise click.BadParameter(f"the weight {tail} must lie in [0, 1]", param_hint="--interpolate")
        return Path(head), weight
    return Path(spec), None
