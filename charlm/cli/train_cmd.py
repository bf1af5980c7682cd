"""`charlm train CORPUS...`: fit a tokenizer, train a model, keep best and last checkpoints."""

from __future__ import annotations

import math
import signal
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from charlm import checkpoint as ckpt
from charlm.cli.common import DEVICE_HELP, Duration, console, domain_errors, err_console, option_table
from charlm.config import (
    ENCODING_ERRORS,
    LEVELS,
    MAX_SEED,
    OPTIMIZERS,
    PRETOKENIZERS,
    SCHEDULES,
    SUBWORD_MODELS,
    TrainConfig,
    resumed_config,
)
from charlm.devices import PRECISIONS
from charlm.errors import CharlmError
from charlm.model import CELLS
from charlm.train import train

_D = {f.name: f.default for f in fields(TrainConfig)}


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class RichObserver:
    """Progress bar and log lines on stderr; the summary table on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task: Any = None
        self.last_valid: dict[str, Any] | None = None
        self.level = "char"

    def on_start(self, info: dict[str, Any]) -> None:
        self.level = info["level"]
        for warning in info["warnings"]:  # shown even with --quiet: they may mean the run is not what was meant
            err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
        if info["already_done"]:
            err_console.print(
                f"[yellow]note:[/] the run already reached its limit at step {info['resumed_from']}; "
                "nothing to do. Pass a larger --max-steps, --epochs or --time-budget to go on.",
                soft_wrap=True,
            )
        if self.quiet:
            return
        m = info["model"]
        resumed = f", resumed at step {info['resumed_from']}" if info["resumed_from"] is not None else ""
        limits = [
            f"{info['epochs']:g} epochs" if info["epochs"] else None,
            f"{info['max_steps']} steps" if info["max_steps"] else None,
            f"{_fmt_time(info['time_budget'])} budget" if info["time_budget"] else None,
        ]
        err_console.print(
            f"[bold]charlm train[/] -> {info['out']}{resumed}\n"
            f"  {info['level']} level, vocabulary {info['vocab_size']}, "
            f"{m['num_layers']}x{m['hidden_size']} {m['cell'].upper()} (emb {m['emb_size']}), "
            f"{info['parameters'] / 1e6:.2f}M parameters on {info['device']} ({info['precision']})\n"
            f"  {info['train_tokens']:,} training / {info['valid_tokens']:,} validation tokens, "
            f"{info['windows_per_epoch']} windows per epoch; stop at {', '.join(x for x in limits if x)}"
        )
        self.progress = Progress(
            TextColumn("step {task.fields[step]:>6} ep {task.fields[epoch]:>3}"),
            BarColumn(bar_width=24),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("val {task.fields[val]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("left {task.fields[left]}"),
            console=err_console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=1.0, step=0, epoch=0, loss="-", val="-", tps="-", left="-")

    def _val_text(self) -> str:
        if not self.last_valid:
            return "-"
        v = self.last_valid
        return f"{v['valid_loss']:.4f} (ppl {v['valid_ppl']:.2f}, {v['valid_bpc']:.3f} bpc)"

    def on_log(self, record: dict[str, Any]) -> None:
        if self.progress is None:
            return
        self.progress.update(
            self.task,
            completed=record["progress"],
            step=record["step"],
            epoch=record["epoch"],
            loss=f"{record['loss']:.4f}",
            tps=f"{record['tokens_per_s']:,.0f}",
            left=_fmt_time(record["time_left"]),
            val=self._val_text(),
        )

    def on_eval(self, record: dict[str, Any]) -> None:
        self.last_valid = record
        if self.progress is not None:
            self.progress.update(self.task, val=self._val_text())

    def on_end(self, summary: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.quiet:
            return
        table = Table(title="charlm train: summary", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")

        def loss_row(name: str, loss: float | None) -> None:
            if loss is None:
                table.add_row(name, "-")
            else:
                table.add_row(
                    name,
                    f"{loss:.4f} nats/token (ppl {math.exp(min(loss, 700)):.2f}, {loss / math.log(2):.3f} bits/token)",
                )

        table.add_row("stopped by", summary["status"])
        table.add_row("steps / epochs", f"{summary['step']} / {summary['epoch']}")
        loss_row("train loss", summary["train_loss"])
        loss_row("last validation", summary["last_valid_loss"])
        loss_row("best validation", summary["best_valid_loss"])
        if self.last_valid:
            table.add_row("validation bits/char", f"{self.last_valid['valid_bpc']:.4f} (last)")
        table.add_row("tokens/s", f"{summary['tokens_per_s']:,.0f}")
        table.add_row("time", _fmt_time(summary["elapsed"]))
        table.add_row("checkpoint", f"{summary['out']} (best, last)")
        console.print(table)


def _write_plot(out: Path, quiet: bool) -> None:
    """The loss-curve picture beside the checkpoint; a plotting problem never fails a finished run."""
    from charlm.plot import write_png  # matplotlib loads only here

    try:
        path = write_png(out)
    except CharlmError as exc:
        err_console.print(f"[yellow]warning:[/] no loss plot: {escape(str(exc))}", soft_wrap=True)
        return
    if not quiet:
        err_console.print(
            f"loss curves: {escape(str(path))} (charlm plot {escape(str(out))} draws them here)", soft_wrap=True
        )


_PROB = click.FloatRange(0.0, 1.0, max_open=True)
_POSITIVE = click.FloatRange(0, min_open=True)
_OPEN_UNIT = click.FloatRange(0, 1, min_open=True, max_open=True)

# Every TrainConfig option as (flags, its field, click type, help): one line each. The default
# is TrainConfig's own; a "/" in the flag makes a boolean switch.
# fmt: off
OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--out -o", "out", click.Path(path_type=str), "Checkpoint directory [default: checkpoints/<corpus name>]."),
    ("--valid", "valid", click.Path(path_type=str), "Validation file(s), repeatable [default: the end of the corpus]."),
    ("--valid-fraction", "valid_fraction", _OPEN_UNIT, "Fraction held out for validation when no --valid."),
    ("--encoding-errors", "encoding_errors", click.Choice(ENCODING_ERRORS), "replace: bad bytes become U+FFFD."),
    ("--level", "level", click.Choice(LEVELS), "Tokenizer: characters, words or SentencePiece subwords."),
    ("--min-freq", "min_freq", click.IntRange(1), "word: rarer words become <unk>."),
    ("--max-vocab", "max_vocab", click.IntRange(3), "word: keep at most this many types (specials included)."),
    ("--pretokenize", "pretokenize", click.Choice(PRETOKENIZERS), "word: whitespace (tokenized text) or punct (raw)."),
    ("--subword-vocab-size", "subword_vocab_size", click.IntRange(1), "subword: SentencePiece vocabulary size."),
    ("--subword-model", "subword_model", click.Choice(SUBWORD_MODELS), "subword: SentencePiece model type."),
    ("--cell", "cell", click.Choice(CELLS), "Recurrent cell (rnn = Elman tanh)."),
    ("--layers", "num_layers", click.IntRange(1), "Stacked recurrent layers."),
    ("--hidden", "hidden_size", click.IntRange(1), "Hidden units per layer."),
    ("--emb", "emb_size", click.IntRange(1), "Embedding size."),
    ("--dropout", "dropout", _PROB, "Dropout between layers and on the output (non-recurrent connections)."),
    ("--dropout-input", "dropout_input", _PROB, "Dropout on the embeddings."),
    ("--dropout-embed", "dropout_embed", _PROB, "Embedding dropout: drop whole token types."),
    ("--weight-drop", "weight_drop", _PROB, "DropConnect on hidden-to-hidden weights (AWD-LSTM)."),
    ("--locked-dropout/--no-locked-dropout", "locked_dropout", None, "One dropout mask per sequence (variational)."),
    ("--tie-weights/--no-tie-weights", "tie_weights", None, "Share embedding and decoder weights."),
    ("--ar", "ar", click.FloatRange(0), "Activation regularisation weight (AWD-LSTM)."),
    ("--tar", "tar", click.FloatRange(0), "Temporal activation regularisation weight (AWD-LSTM)."),
    ("--optimizer", "optimizer", click.Choice(OPTIMIZERS), "Optimiser."),
    ("--lr", "lr", _POSITIVE, "Peak learning rate."),
    ("--weight-decay", "weight_decay", click.FloatRange(0), "Decoupled weight decay (AdamW) or L2 (SGD)."),
    ("--momentum", "momentum", click.FloatRange(0, 1, max_open=True), "sgd only."),
    ("--clip", "clip", click.FloatRange(0), "Clip the gradient norm to this (0: off)."),
    ("--batch-size -b", "batch_size", click.IntRange(1), "Parallel streams."),
    ("--bptt -t", "bptt", click.IntRange(1), "Window length of truncated BPTT."),
    ("--schedule", "schedule", click.Choice(SCHEDULES), "Learning-rate decay (plateau: when validation stalls)."),
    ("--warmup-steps", "warmup_steps", click.IntRange(0), "Linear warm-up of the learning rate."),
    ("--min-lr-ratio", "min_lr_ratio", click.FloatRange(0, 1), "cosine/linear: final lr as a fraction of --lr."),
    ("--plateau-factor", "plateau_factor", _OPEN_UNIT, "plateau: multiply the lr by this when validation stalls."),
    ("--plateau-patience", "plateau_patience", click.IntRange(0), "plateau: validations without improvement first."),
    ("--patience", "patience", click.IntRange(1), "Early stopping: validations without improvement."),
    ("--epochs", "epochs", _POSITIVE, "Stop after this many passes over the training text."),
    ("--max-steps", "max_steps", click.IntRange(1), "Stop after this many optimiser steps."),
    ("--time-budget", "time_budget", Duration(), "Stop after this time (90s, 10m, 1h); 10m when no limit is given."),
    ("--eval-interval", "eval_interval", click.IntRange(1), "Validate (and save) every N steps."),
    ("--eval-streams", "eval_streams", click.IntRange(1), "Parallel streams for validation."),
    ("--log-interval", "log_interval", click.IntRange(1), "Log the training loss every N steps."),
    ("--device", "device", None, DEVICE_HELP),
    ("--precision", "precision", click.Choice(PRECISIONS), "auto: bf16 (or fp16) autocast on CUDA, fp32 on a CPU."),
    ("--seed", "seed", click.IntRange(0, MAX_SEED), "Random seed (weights, dropout, data order)."),
]
# fmt: on


def _option_rows() -> list[tuple[str, dict[str, Any]]]:
    """OPTIONS as `option_table` rows, each defaulting to TrainConfig's value."""
    rows = []
    for flags, name, kind, help_text in OPTIONS:
        many = name == "valid"
        default = None if many else _D[name]
        typed = {"type": kind} if kind is not None else {}
        shown = default is not None and name != "out"
        rows.append(
            (f"{flags} {name}", dict(default=default, show_default=shown, multiple=many, help=help_text, **typed))
        )
    return rows


@click.command("train")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=str))
@option_table(_option_rows())
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a different run already in --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display or summary (for scripts).")
@click.pass_context
@domain_errors
def train_command(
    ctx: click.Context, corpus: tuple[str, ...], resume: bool, overwrite: bool, quiet: bool, **options: Any
) -> None:
    """Train a language model on CORPUS (text files or directories).

    \b
    Example:
      charlm train corpora/tinyshakespeare.txt --time-budget 5m
    """
    options["valid"] = tuple(options.pop("valid"))
    if resume:
        # The run keeps its options; the library's rule says what the command line may change.
        given = {n: v for n, v in options.items() if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE}
        out = TrainConfig(corpus=corpus, out=options["out"]).out_dir
        stored = ckpt.open_checkpoint(out).train_config if ckpt.is_checkpoint_dir(out) else None
        if stored is not None:
            flags = {p.name: p.opts[0] for p in ctx.command.params if p.name}
            config = resumed_config(stored, {"corpus": corpus, "out": options["out"], **given}, flags)
        else:  # the trainer says there is nothing to resume
            config = TrainConfig(corpus=corpus, **options)
    else:
        config = TrainConfig(corpus=corpus, **options)
    try:
        result = train(config, resume=resume, overwrite=overwrite, observer=RichObserver(quiet))
    except KeyboardInterrupt:
        # A second signal: the first one already asked the trainer to save and stop.
        err_console.print("interrupted; the last saved checkpoint is kept")
        ctx.exit(130)
    _write_plot(result.out, quiet)
    if result.signal is not None:
        if not quiet:
            err_console.print(f"stopped by {result.signal} at step {result.step}; saved, continue with --resume")
        ctx.exit(128 + int(getattr(signal, result.signal)))
