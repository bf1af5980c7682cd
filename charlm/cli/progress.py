"""What `charlm train` shows while it runs: start-up lines, progress, samples, and a summary.

On a terminal the progress is a live bar; anywhere else (a log file, CI, nohup)
it is plain log lines, one per log interval and validation, never cropped to a
width. Warnings and progress go to stderr, the summary to stdout.
"""

from __future__ import annotations

import math
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from charlm.cli.common import console, err_console


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def _line(message: str, stdout: bool = False) -> None:
    """One line as it is: no markup, no wrapping, no cropping (a log file keeps every figure)."""
    (console if stdout else err_console).print(message, markup=False, highlight=False, soft_wrap=True)


class TrainDisplay:
    """A `TrainObserver` for the command line: live on a terminal, plain lines elsewhere."""

    def __init__(self, quiet: bool, samples: bool = True, live: bool | None = None) -> None:
        self.quiet, self.samples = quiet, samples
        self.live = err_console.is_terminal if live is None else live
        self.progress: Progress | None = None
        self.task: Any = None
        self.last_valid: dict[str, Any] | None = None
        self._prep: Progress | None = None
        self._prep_tasks: dict[str, Any] = {}
        self._prep_logged: dict[str, int] = {}

    # ------------------------------------------------------------ tokenizing
    def on_prepare(self, phase: str, done: int, total: int) -> None:
        """The one-time passes over a new corpus ("fitting", "encoding"): a bar with bytes/s and time left."""
        if self.quiet:
            return
        if self.live:
            if self._prep is None:
                self._prep = Progress(
                    TextColumn("{task.description:<9}"),
                    BarColumn(bar_width=30),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    console=err_console,
                    transient=True,
                )
                self._prep.start()
            if phase not in self._prep_tasks:
                self._prep_tasks[phase] = self._prep.add_task(phase, total=total)
            self._prep.update(self._prep_tasks[phase], completed=done)
            return
        step = max(total // 10, 1)  # a log line at each tenth, and at the end
        if done >= total or done // step > self._prep_logged.get(phase, -1):
            self._prep_logged[phase] = done // step
            _line(f"{phase} the corpus: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB")

    def _end_prepare(self) -> None:
        if self._prep is not None:
            self._prep.stop()
            self._prep = None

    # ------------------------------------------------------------ start
    def on_start(self, info: dict[str, Any]) -> None:
        self._end_prepare()
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
        for line in start_lines(info):
            _line(line)
        if self.live:
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
            self.task = self.progress.add_task(
                "train", total=1.0, step=0, epoch=0, loss="-", val="-", tps="-", left="-"
            )

    # ------------------------------------------------------------ during
    def on_log(self, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=record["progress"],
                step=record["step"],
                epoch=record["epoch"],
                loss=f"{record['loss']:.4f}",
                tps=f"{record['tokens_per_s']:,.0f}",
                left=fmt_time(record["time_left"]),
                val=self._val_text(),
            )
            return
        left = f" left {fmt_time(record['time_left'])}" if record["time_left"] is not None else ""
        _line(
            f"step {record['step']} epoch {record['epoch']} loss {record['loss']:.4f} lr {record['lr']:.3g} "
            f"{record['tokens_per_s']:,.0f} tok/s elapsed {fmt_time(record['elapsed'])}{left}"
        )

    def on_eval(self, record: dict[str, Any]) -> None:
        self.last_valid = record
        if self.progress is not None:
            self.progress.update(self.task, val=self._val_text())
        elif not self.quiet:
            mark = " (best)" if record.get("improved") else ""
            _line(f"valid step {record['step']} loss {self._val_text()}{mark}")
        for warning in record.get("warnings", ()):  # the guards' (charlm.training.baselines): shown even with --quiet
            (self.progress.console if self.progress else err_console).print(
                f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True
            )
        if self.quiet:
            return
        sample = record.get("sample")
        if self.samples and sample:
            text = sample["prompt"] + sample["text"]
            shown = "\n".join(f"  | {line}" for line in text.rstrip("\n").split("\n"))
            (self.progress.console if self.progress else err_console).print(
                f"sample at step {record['step']}:\n{shown}", markup=False, highlight=False, soft_wrap=True
            )

    def _val_text(self) -> str:
        if not self.last_valid:
            return "-"
        v = self.last_valid
        if "valid_text" in v:  # a task's own figures (a tagger's accuracy and F1)
            return f"{v['valid_loss']:.4f} ({v['valid_text']})"
        if "valid_accuracy" in v:  # a classifier's
            return f"{v['valid_loss']:.4f} (accuracy {v['valid_accuracy']:.3f}, macro-F1 {v['valid_macro_f1']:.3f})"
        return f"{v['valid_loss']:.4f} (ppl {v['valid_ppl']:.2f}, {v['valid_bpc']:.3f} bpc)"

    # ------------------------------------------------------------ end
    def on_end(self, summary: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.quiet:
            return
        rows = summary_rows(summary, self.last_valid)
        if console.is_terminal:
            table = Table(title="charlm train: summary", show_header=False)
            table.add_column("what", style="bold")
            table.add_column("value")
            for name, value in rows:
                table.add_row(name, escape(value))
            console.print(table)
        else:
            _line("charlm train: summary", stdout=True)
            for name, value in rows:
                _line(f"  {name}: {value}", stdout=True)
        for note in summary.get("notes", ()):  # what the end says of the run's worth (worse than Kneser-Ney)
            err_console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


def start_lines(info: dict[str, Any]) -> list[str]:
    """The start-up lines: what is trained, on what, until when."""
    m = info["model"]
    resumed = f", resumed at step {info['resumed_from']}" if info["resumed_from"] is not None else ""
    limits = [
        f"{info['epochs']:g} epochs" if info["epochs"] else None,
        f"{info['max_steps']} steps" if info["max_steps"] else None,
        f"{fmt_time(info['time_budget'])} budget" if info["time_budget"] else None,
    ]
    if "start_lines" in info:  # a task that describes itself (a tagger)
        lines = [f"charlm train -> {info['out']}{resumed}; stop at {', '.join(x for x in limits if x)}"]
        lines += info["start_lines"]
        if info.get("chosen"):
            lines.append(f"  chosen for this run: {info['chosen']}")
        return lines
    if "task_lines" in info:  # a task that is not a language model describes itself (a classifier)
        lines = [f"charlm train -> {info['out']}{resumed}", *info["task_lines"]]
        lines[-1] += f" on {info['device']}; stop at {', '.join(x for x in limits if x)}"
        if info.get("chosen"):
            lines.append(f"  chosen for this run: {info['chosen']}")
        if info.get("baselines"):
            lines.append(f"  baseline on the validation texts: {baseline_text(info['baselines'], info['level'])}")
        return lines
    lines = [
        f"charlm train -> {info['out']}{resumed}",
        f"  {info['level']} level, vocabulary {info['vocab_size']:,}, "
        f"{m['num_layers']}x{m['hidden_size']} {m['cell'].upper()} (emb {m['emb_size']}), "
        f"{info['parameters'] / 1e6:.2f}M parameters on {info['device']} ({info['precision']})",
        f"  {info['train_tokens']:,} training / {info['valid_tokens']:,} validation tokens "
        f"({100 * info['valid_oov_rate']:.1f}% outside the vocabulary), "
        f"{info['windows_per_epoch']:,} windows per epoch; stop at {', '.join(x for x in limits if x)}",
    ]
    if info["valid_scored"] < info["valid_tokens"]:
        lines.append(
            f"  validation scores {info['valid_scored']:,} of the {info['valid_tokens']:,} held-out tokens, evenly "
            "spread (--eval-tokens); charlm perplexity gives the full figure"
        )
    reused = "reused" if info["cache_reused"] else "tokenized once, reused by later runs"
    lines.append(f"  token cache: {info['cache']} ({reused})")
    if info.get("chosen"):
        lines.append(f"  chosen for this run: {info['chosen']}")
    if info.get("baselines"):
        lines.append(f"  baselines on the validation text: {baseline_text(info['baselines'], info['level'])}")
    return lines


def _ppl(value: float) -> str:
    """A perplexity with three significant figures or more: 4.56, 28.4, 191.5."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def baseline_text(b: dict[str, Any], level: str) -> str:
    """The unigram and Kneser-Ney figures of `charlm.training.baselines.compute`, as one phrase."""

    def figure(f: dict[str, Any]) -> str:
        bpc = f", {f['bpc']:.3f} bpc" if level == "char" and f.get("bpc") is not None else ""
        return f"{f['loss']:.3f} (ppl {_ppl(f['ppl'])}{bpc})"

    if "majority" in b:  # a classifier's: always the most frequent training label
        f = b["majority"]
        return f"majority label {f['label']!r}: loss {f['loss']:.3f}, accuracy {f['accuracy']:.3f}"
    kn = f"Kneser-Ney {b['kn_order']}-gram "
    kn += figure(b["kn"]) if b.get("kn") else f"skipped: {b.get('kn_skipped') or 'not measured'}"
    return f"unigram {figure(b['unigram'])}, {kn}"


def versus_baselines(best: float | None, b: dict[str, Any]) -> str:
    """The summary's comparison: the baselines' perplexities and how far the best validation is from them."""
    if "majority" in b:
        return baseline_text(b, "classify")
    kn, uni = b.get("kn"), b["unigram"]
    shown = f"unigram ppl {_ppl(uni['ppl'])}"
    if kn:
        shown += f", Kneser-Ney {b['kn_order']}-gram ppl {_ppl(kn['ppl'])}"
    if best is None:
        return shown
    ref, name = (kn, "Kneser-Ney") if kn else (uni, "unigram")
    ratio = math.exp(min(best, 700.0)) / ref["ppl"]
    if ratio >= 2:
        return f"{shown}; best is {ratio:.1f}x {name}'s perplexity"
    return f"{shown}; best is {100 * abs(1 - ratio):.0f}% {'below' if ratio <= 1 else 'above'} {name} (perplexity)"


def summary_rows(summary: dict[str, Any], last_valid: dict[str, Any] | None) -> list[tuple[str, str]]:
    def loss(value: float | None) -> str:
        if value is None:
            return "-"
        if summary.get("loss_unit"):  # not a language model: no perplexity
            return f"{value:.4f} nats/{summary['loss_unit']}"
        return f"{value:.4f} nats/token (ppl {math.exp(min(value, 700)):.2f}, {value / math.log(2):.3f} bits/token)"

    at = f" at step {summary['best_step']}" if summary.get("best_step") is not None else ""
    valid = loss
    if last_valid and "valid_criterion" in last_valid:  # a task whose best follows its own criterion (a tagger)

        def valid(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f} (the criterion: 1 - accuracy, or 1 - entity F1)"

    rows = [
        ("stopped by", summary["status"]),
        ("steps / epochs", f"{summary['step']} / {summary['epoch']}"),
        ("train loss", loss(summary["train_loss"])),
        ("last validation", valid(summary["last_valid_loss"])),
        ("best validation", valid(summary["best_valid_loss"]) + at),
    ]
    if summary.get("baselines") and "majority_accuracy" in summary["baselines"]:  # a tagger's
        rows.append(("baseline", f"most frequent tag per word: {100 * summary['baselines']['majority_accuracy']:.2f}%"))
    elif summary.get("baselines"):
        rows.append(("baselines", versus_baselines(summary["best_valid_loss"], summary["baselines"])))
    if last_valid and "valid_text" in last_valid:
        rows.append(("last validation figures", last_valid["valid_text"]))
    elif last_valid and "valid_accuracy" in last_valid:
        figures = f"accuracy {last_valid['valid_accuracy']:.4f}, macro-F1 {last_valid['valid_macro_f1']:.4f}"
        rows.append(("validation", f"{figures} (last)"))
    elif last_valid:
        rows.append(("validation bits/char", f"{last_valid['valid_bpc']:.4f} (last)"))
    rows += [
        (f"{summary.get('rate_unit', 'tokens')}/s", f"{summary['tokens_per_s']:,.0f}"),
        ("time", fmt_time(summary["elapsed"])),
        ("checkpoint", f"{summary['out']} (best, last)"),
    ]
    return rows
