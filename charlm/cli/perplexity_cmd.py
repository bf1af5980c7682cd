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
    DEFAULT_SEGMENT,
    DEFAULT_STREAMS,
    DEFAULT_WARMUP,
    DEFAULT_WINDOW,
    DYNAMIC_LR,
    DYNAMIC_SEGMENT,
    RMS_DECAY,
    RMS_LR,
    RULES,
    DynamicOptions,
    TextScore,
    choose_weight,
    context_id,
    evaluate_file,
    evaluate_file_dynamic,
    evaluate_file_mixture,
    gradient_rms,
    total,
)
from charlm.models import KneserNeyModel, RNNLanguageModel
from charlm.runtime import resolve_device
from charlm.training import memory

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
    if exact and ctx.get_parameter_source("streams") == ParameterSource.COMMANDLINE and streams != 1:
        raise click.UsageError("--exact scores one stream; leave out --streams or drop --exact")
    exact = exact or streams == 1
    for name in ("dynamic_segment", "dynamic_lr", "dynamic_rule"):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE and not dynamic:
            raise click.UsageError(f"--{name.replace('_', '-')} applies to --dynamic only; add --dynamic or drop it")
    if dynamic and interpolate:
        raise click.UsageError("--dynamic and --interpolate cannot be combined; choose one")
    dev = resolve_device(device)
    model, tokenizer, info = load_for_inference(checkpoint, which=which, device=dev, verify=not no_verify)
    exact = exact or isinstance(model, KneserNeyModel)
    parallel = None if exact else streams
    _check_memory(model, files, dev, parallel, dynamic_segment if dynamic else None)
    scoring = dict(exact=exact, streams=streams, window=window, warmup=DEFAULT_WARMUP, segment=DEFAULT_SEGMENT)
    if interpolate or dynamic:
        compare = _Compare(ctx, model, tokenizer, info, which, encoding_errors, as_json, not no_verify)
        if interpolate:
            compare.interpolate(interpolate, files, scoring)
        else:
            rms = dynamic_rule == "rms"
            lr = dynamic_lr if dynamic_lr is not None else (RMS_LR if rms else DYNAMIC_LR)
            decay = RMS_DECAY if rms else 0.0
            compare.dynamic(
                DynamicOptions(lr=lr, segment=dynamic_segment, decay=decay, rule=dynamic_rule), files, scoring
            )
        return
    opts = dict(scoring, errors=encoding_errors)

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
        "protocol": _protocol(scoring),
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


def _protocol(scoring: dict[str, Any]) -> dict[str, Any]:
    """How the files were scored, for the JSON report."""
    exact = bool(scoring["exact"])
    return {
        "exact": exact,
        "streams": 1 if exact else scoring["streams"],
        "window": scoring["window"],
        "warmup": 0 if exact else scoring["warmup"],
        "segment": None if exact else scoring["segment"],
        "first_token": "scored after a line end",
    }


def _check_memory(
    model: Any, files: tuple[Path, ...], device: Any, streams: int | None, dynamic_segment: int | None
) -> None:
    """Refuse --streams or --dynamic-segment beyond what the device holds (`charlm.training.memory`).

    A file of n bytes has at most n tokens: that bounds the streams scoring uses
    (each segment at least a warm-up long) and the segment dynamic evaluation
    takes, so a large value is refused only for a file long enough to use it.
    """
    if not isinstance(model, RNNLanguageModel):
        return  # a Kneser-Ney model is scored as one stream, token by token
    longest = max((p.stat().st_size for p in files if p.is_file()), default=0)
    if streams is not None:
        used = min(streams, max(1, longest // DEFAULT_WARMUP))
        need = memory.scoring_bytes(model.config, used)
        memory.require(need, device, f"scoring {used:,} parallel streams", "use fewer --streams (or --exact)")
    if dynamic_segment is not None:
        used = min(dynamic_segment, max(1, longest))
        need = memory.dynamic_bytes(model.config, used)
        doing = f"dynamic evaluation in segments of {used:,} tokens"
        memory.require(need, device, doing, "use a smaller --dynamic-segment")


def _evaluate_with_progress(model: Any, tokenizer: Any, path: Path, opts: dict[str, Any], show: bool) -> TextScore:
    """evaluate_file with a transient progress bar on stderr when it is a terminal."""
    return _with_progress(path, show, lambda progress: evaluate_file(model, tokenizer, path, progress=progress, **opts))


def _with_progress(path: Path, show: bool, run: Callable[[Callable[[int], None] | None], Any]) -> Any:
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


def _print_report(summary: dict[str, Any], results: list[tuple[Path, Any]], scores: list[TextScore], kind: str) -> None:
    mode = _mode(summary["protocol"])
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


def _mode(p: dict[str, Any]) -> str:
    if p["exact"]:
        return "exact: one stream per file"
    return f"{p['streams']} streams x {p['segment']} tokens, warm-up {p['warmup']} (--exact: one stream)"


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


# ------------------------------------------------------------------ figures side by side
class _Compare:
    """--interpolate and --dynamic: several figures per file (one exact stream each), one table or JSON."""

    def __init__(
        self,
        ctx: click.Context,
        model: Any,
        tokenizer: Any,
        info: CheckpointInfo,
        which: str,
        errors: str,
        as_json: bool,
        verify: bool = True,
    ) -> None:
        self.ctx, self.model, self.tokenizer, self.info = ctx, model, tokenizer, info
        self.which, self.errors, self.as_json, self.verify = which, errors, as_json, verify

    def interpolate(self, spec: str, files: tuple[Path, ...], scoring: dict[str, Any]) -> None:
        path, weight = _parse_interpolate(spec)
        other, other_tok, other_info = load_for_inference(path, device=_device_of(self.model), verify=self.verify)
        if tokenizer_fingerprint(other_tok) != tokenizer_fingerprint(self.tokenizer):
            raise ConfigError(
                f"{other_info.path} has another tokenizer than {self.info.path}; "
                "interpolate models trained with the same tokenizer (same corpus, level and options)"
            )
        chosen = "given"
        if weight is None:
            weight, chosen = self._choose_weight(other, path, scoring)
        labels = [self._label(self.model), self._label(other), f"mix w={weight:g}"]

        def score(p: Path, progress: Any) -> list[TextScore]:
            return evaluate_file_mixture(
                self.model, other, self.tokenizer, p, [weight], errors=self.errors, progress=progress, **scoring
            )

        extra = {
            "interpolate": {
                "checkpoint": str(other_info.path),
                "weight": weight,
                "weight_of": "the --interpolate model: p = (1 - w) p_checkpoint + w p_interpolate",
                "chosen": chosen,
            }
        }
        note = f"mixture weight w = {weight:g} of {other_info.path} ({chosen}); p = (1 - w) p_1 + w p_2"
        self._report(files, labels, ["checkpoint", "interpolate", "mixture"], score, extra, note, scoring)

    def _choose_weight(self, other: Any, spec_path: Path, scoring: dict[str, Any]) -> tuple[float, str]:
        from charlm.training import TrainConfig, prepare_data

        hint = f"give the weight as --interpolate {spec_path}:0.5"
        try:
            config = TrainConfig.from_dict(self.info.train_config)
        except (CharlmError, TypeError):
            raise ConfigError(f"{self.info.path} records no training corpus to choose a weight on; {hint}") from None
        try:
            data = prepare_data(config, self.tokenizer)
        except CorpusError as exc:
            raise ConfigError(f"cannot read the run's validation text ({exc}); {hint}") from None
        weight, _ = choose_weight(
            self.model,
            other,
            data.valid_ids,
            context_id(self.tokenizer),
            max_tokens=config.eval_tokens or None,
            **scoring,
        )
        n = min(len(data.valid_ids), config.eval_tokens or len(data.valid_ids))
        return weight, f"chosen on {n:,} tokens of {self.info.path}'s validation text"

    def dynamic(self, options: DynamicOptions, files: tuple[Path, ...], scoring: dict[str, Any]) -> None:
        rms = None
        rule = "SGD on each segment's mean NLL after scoring it, eval mode, state carried (Krause et al.)"
        if options.rule == "rms":
            rms, where = self._gradient_rms(options.segment)
            rule = (
                "each segment's mean-NLL gradient divided by its RMS on the training text, then a pull toward "
                f"the trained weights in proportion to that RMS (Krause et al.); statistics from {where}"
            )

        def score(p: Path, progress: Any) -> list[TextScore]:
            return list(
                evaluate_file_dynamic(
                    self.model, self.tokenizer, p, options, errors=self.errors, progress=progress, rms=rms, **scoring
                )
            )

        extra = {
            "dynamic": {
                "lr": options.lr,
                "segment": options.segment,
                "decay": options.decay,
                "rule": options.rule,
                "how": rule,
                "scoring": "static as plain perplexity (protocol); dynamic one exact stream",
            }
        }
        note = (
            f"dynamic: one {options.rule.upper()} step (lr {options.lr:g}"
            + (f", decay {options.decay:g}" if options.decay else "")
            + f") after each {options.segment}-token segment, one stream; static as plain perplexity"
        )
        self._report(files, ["static", "dynamic"], ["static", "dynamic"], score, extra, note, scoring)

    def _gradient_rms(self, segment: int) -> tuple[Any, str]:
        """Gradient statistics for the RMS rule, gathered on the last RMS_TOKENS of the run's training text."""
        from charlm.evaluation import RMS_TOKENS
        from charlm.training import TrainConfig, prepare_data

        hint = "use --dynamic-rule sgd"
        try:
            config = TrainConfig.from_dict(self.info.train_config)
            data = prepare_data(config, self.tokenizer)
        except (CharlmError, TypeError) as exc:
            raise ConfigError(
                f"cannot read {self.info.path}'s training text for --dynamic-rule rms ({exc}); {hint}"
            ) from None
        ids = data.train_ids[max(0, len(data.train_ids) - RMS_TOKENS) :]
        return gradient_rms(self.model, ids, segment), f"the last {len(ids):,} tokens of the run's training text"

    @staticmethod
    def _label(model: Any) -> str:
        return f"KN {model.order}-gram" if isinstance(model, KneserNeyModel) else "RNN"

    def _report(
        self,
        files: tuple[Path, ...],
        labels: list[str],
        keys: list[str],
        score: Callable[[Path, Any], list[TextScore]],
        extra: dict[str, Any],
        note: str,
        scoring: dict[str, Any] | None = None,
    ) -> None:
        results: list[tuple[Path, list[TextScore] | CorpusError]] = []
        for path in files:
            try:
                results.append((path, _with_progress(path, not self.as_json, functools.partial(score, path))))
            except CorpusError as exc:
                results.append((path, exc))
        good = [r for _, r in results if not isinstance(r, CorpusError)]
        totals = [total(r[i] for r in good) for i in range(len(keys))] if good else None
        summary = {
            "checkpoint": str(self.info.path),
            "which": self.which,
            "level": self.tokenizer.kind,
            "vocab_size": self.tokenizer.vocab_size,
            "protocol": _protocol(scoring or {"exact": True, "streams": 1, "window": None}),
            **extra,
            "labels": dict(zip(keys, labels)),
            "files": [
                {"path": str(p), **({"error": str(r)} if isinstance(r, CorpusError) else _keyed(keys, r))}
                for p, r in results
            ],
            "total": _keyed(keys, totals) if totals else None,
        }
        if self.as_json:
            click.echo(json.dumps(_finite(summary), indent=2, ensure_ascii=False, allow_nan=False))
        else:
            self._table(summary, results, labels, totals, note)
        failed = len(results) - len(good)
        if failed:
            err_console.print(
                f"[red]error:[/] {failed} of {len(results)} files could not be evaluated (see the report)"
            )
            self.ctx.exit(1)

    def _table(
        self, summary: dict[str, Any], results: list[tuple[Path, Any]], labels: list[str], totals: Any, note: str
    ) -> None:
        table = Table(
            title=f"{escape(summary['checkpoint'])}, {summary['level']} level, vocabulary {summary['vocab_size']:,}",
            caption=escape(note) + "; " + _mode(summary["protocol"]),
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        table.add_column("file", overflow="fold", min_width=8)
        table.add_column("model", overflow="fold")
        for name in ("tokens", "NLL\n(nats)", "perplexity", "bits/\nchar", "bits/\nbyte", "OOV"):
            table.add_column(name, justify="right", no_wrap=True)
        for path, r in results:
            if isinstance(r, CorpusError):
                table.add_row(escape(str(path)), "", "[red]error[/]", *[""] * 5)
                continue
            for i, (label, sc) in enumerate(zip(labels, r)):
                table.add_row(escape(str(path)) if i == 0 else "", escape(label), *_cells(sc))
            table.add_section()
        if totals and len(results) > 1:
            for i, (label, sc) in enumerate(zip(labels, totals)):
                table.add_row("[bold]total[/]" if i == 0 else "", escape(label), *(f"[bold]{c}[/]" for c in _cells(sc)))
        console.print(table)
        for _, r in results:
            if isinstance(r, CorpusError):
                console.print(f"[red]error:[/] {escape(str(r))}", soft_wrap=True)


def _keyed(keys: list[str], scores: list[TextScore]) -> dict[str, Any]:
    return {k: s.to_dict() for k, s in zip(keys, scores)}


def _device_of(model: Any) -> Any:
    from charlm.evaluation import model_device

    return model_device(model)


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
