"""`charlm train CORPUS...`: fit a tokenizer, train a model, keep best and last checkpoints."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from dataclasses import fields
from typing import Any

import click
from click.core import ParameterSource
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from charlm import checkpoint as ckpt
from charlm.cli.common import DEVICE_HELP, Duration, console, domain_errors, err_console
from charlm.config import LEVELS, MAX_SEED, OPTIMIZERS, PRETOKENIZERS, SCHEDULES, SUBWORD_MODELS, TrainConfig, resumed_config
from charlm.devices import PRECISIONS
from charlm.errors import CharlmError
from charlm.model import CELLS
from charlm.train import train

_D = {f.name: f.default for f in fields(TrainConfig)}
_PROB = click.FloatRange(0.0, 1.0, max_open=True)


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
                table.add_row(name, f"{loss:.4f} nats/token (ppl {math.exp(min(loss, 700)):.2f}, {loss / math.log(2):.3f} bits/token)")

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
        err_console.print(f"loss curves: {escape(str(path))} (charlm plot {escape(str(out))} draws them here)", soft_wrap=True)


@click.command("train")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", "-o", type=click.Path(path_type=str), help="Checkpoint directory [default: checkpoints/<corpus name>].")
@click.option("--valid", "valid", multiple=True, type=click.Path(path_type=str), help="Validation file(s); default: hold out the end of the corpus.")
@click.option("--valid-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=_D["valid_fraction"], show_default=True, help="Fraction held out for validation when no --valid.")
@click.option("--encoding-errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True, help="replace: undecodable bytes become U+FFFD instead of an error.")
@click.option("--level", type=click.Choice(LEVELS), default=_D["level"], show_default=True, help="Tokenizer: characters, words or SentencePiece subwords.")
@click.option("--min-freq", type=click.IntRange(1), default=_D["min_freq"], show_default=True, help="word: rarer words become <unk>.")
@click.option("--max-vocab", type=click.IntRange(3), default=None, help="word: keep at most this many types (specials included).")
@click.option("--pretokenize", type=click.Choice(PRETOKENIZERS), default=_D["pretokenize"], show_default=True, help="word: split on whitespace (pre-tokenized corpora) or also split punctuation (raw text).")
@click.option("--subword-vocab-size", type=click.IntRange(1), default=_D["subword_vocab_size"], show_default=True, help="subword: SentencePiece vocabulary size.")
@click.option("--subword-model", type=click.Choice(SUBWORD_MODELS), default=_D["subword_model"], show_default=True, help="subword: SentencePiece model type.")
@click.option("--cell", type=click.Choice(CELLS), default=_D["cell"], show_default=True, help="Recurrent cell (rnn = Elman tanh).")
@click.option("--layers", "num_layers", type=click.IntRange(1), default=_D["num_layers"], show_default=True)
@click.option("--hidden", "hidden_size", type=click.IntRange(1), default=_D["hidden_size"], show_default=True, help="Hidden units per layer.")
@click.option("--emb", "emb_size", type=click.IntRange(1), default=_D["emb_size"], show_default=True, help="Embedding size.")
@click.option("--dropout", type=_PROB, default=_D["dropout"], show_default=True, help="Dropout between layers and on the output (non-recurrent connections).")
@click.option("--dropout-input", type=_PROB, default=_D["dropout_input"], show_default=True, help="Dropout on the embeddings.")
@click.option("--dropout-embed", type=_PROB, default=_D["dropout_embed"], show_default=True, help="Embedding dropout: drop whole token types.")
@click.option("--weight-drop", type=_PROB, default=_D["weight_drop"], show_default=True, help="DropConnect on hidden-to-hidden weights (AWD-LSTM).")
@click.option("--locked-dropout/--no-locked-dropout", default=_D["locked_dropout"], show_default=True, help="One dropout mask per sequence (variational).")
@click.option("--tie-weights/--no-tie-weights", default=_D["tie_weights"], show_default=True, help="Share embedding and decoder weights (projection if sizes differ).")
@click.option("--ar", type=click.FloatRange(0), default=_D["ar"], show_default=True, help="Activation regularisation weight.")
@click.option("--tar", type=click.FloatRange(0), default=_D["tar"], show_default=True, help="Temporal activation regularisation weight.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_D["optimizer"], show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=_D["lr"], show_default=True, help="Peak learning rate.")
@click.option("--weight-decay", type=click.FloatRange(0), default=_D["weight_decay"], show_default=True)
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=_D["momentum"], show_default=True, help="sgd only.")
@click.option("--clip", type=click.FloatRange(0), default=_D["clip"], show_default=True, help="Clip the gradient norm to this (0: off).")
@click.option("--batch-size", "-b", type=click.IntRange(1), default=_D["batch_size"], show_default=True, help="Parallel streams.")
@click.option("--bptt", "-t", type=click.IntRange(1), default=_D["bptt"], show_default=True, help="Window length of truncated BPTT.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=_D["schedule"], show_default=True, help="Learning-rate decay over the run (plateau: anneal when validation stalls).")
@click.option("--warmup-steps", type=click.IntRange(0), default=_D["warmup_steps"], show_default=True)
@click.option("--min-lr-ratio", type=click.FloatRange(0, 1), default=_D["min_lr_ratio"], show_default=True, help="cosine/linear: final lr as a fraction of --lr.")
@click.option("--plateau-factor", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=_D["plateau_factor"], show_default=True)
@click.option("--plateau-patience", type=click.IntRange(0), default=_D["plateau_patience"], show_default=True)
@click.option("--patience", type=click.IntRange(1), default=None, help="Early stopping: stop after this many validations without improvement.")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), default=None, help="Stop after this many passes over the training text.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many optimiser steps.")
@click.option("--time-budget", type=Duration(), default=None, help="Stop after this wall-clock time (90s, 10m, 1h). Default 10m when no limit is given.")
@click.option("--eval-interval", type=click.IntRange(1), default=_D["eval_interval"], show_default=True, help="Validate (and save) every N steps.")
@click.option("--eval-streams", type=click.IntRange(1), default=_D["eval_streams"], show_default=True, help="Parallel streams for validation.")
@click.option("--log-interval", type=click.IntRange(1), default=_D["log_interval"], show_default=True)
@click.option("--device", default=_D["device"], show_default=True, help=DEVICE_HELP)
@click.option("--precision", type=click.Choice(PRECISIONS), default=_D["precision"], show_default=True, help="auto: bf16 (or fp16) autocast on CUDA, fp32 on CPU.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=_D["seed"], show_default=True, help="Random seed (weights, dropout, data order).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a different run already in --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display or summary (for scripts).")
@click.pass_context
@domain_errors
def train_command(ctx: click.Context, corpus: tuple[str, ...], resume: bool, overwrite: bool, quiet: bool, **options: Any) -> None:
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
