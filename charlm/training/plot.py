"""Loss curves of a run: a PNG picture and a drawing for the terminal, from `metrics.jsonl`.

The PNG is drawn with matplotlib: the de-facto standard for plotting in Python,
maintained for two decades with regular releases and wheels for every platform,
and it writes a PNG through its Agg renderer without any display. It is imported
inside `render_png`, so `import charlm` (and every other command) does not pay
for it. The figure is drawn on an explicit Agg canvas rather than through
`pyplot`, so a program that imports this library keeps its own backend and no
global figure state is touched.

The terminal drawing is a small braille renderer of our own (each character is
a 2 x 4 grid of dots): one curve and a few markers do not justify a second
plotting package.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlm.checkpoint import CheckpointInfo, open_checkpoint, read_metrics
from charlm.errors import CharlmError
from charlm.fileio import atomic_write_bytes

PNG_NAME = "loss.png"
FIGSIZE = (12.0, 4.5)  # inches; with DPI the PNG is 1200 x 450 pixels
DPI = 100
DEFAULT_HEIGHT = 16  # lines of the terminal drawing

_BRAILLE = 0x2800
# The bit of each dot in a braille cell, by (x, y) inside its 2 x 4 grid (Unicode dot numbering 1-2-3-7, 4-5-6-8).
_DOT = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
_TRAIN, _VALID, _BEST = "⠒", "●", "◆"
_MIN_CANVAS_WIDTH = 8  # characters of plot area below which only a one-line summary is shown


class PlotError(CharlmError):
    """There is nothing to plot yet, or the picture cannot be written."""


@dataclass(frozen=True)
class Series:
    """One loss curve; NaN marks a value a record did not have as a finite number."""

    steps: tuple[float, ...]
    minutes: tuple[float, ...]  # elapsed training time of the run
    loss: tuple[float, ...]  # nats per token

    def finite(self) -> list[tuple[float, float]]:
        """(step, loss) of the points that can be drawn."""
        return [(s, v) for s, v in zip(self.steps, self.loss) if math.isfinite(s) and math.isfinite(v)]


@dataclass(frozen=True)
class Curves:
    """The train and validation loss curves of a run, with a title that names it."""

    title: str
    train: Series
    valid: Series

    @property
    def best(self) -> tuple[float, float, float] | None:
        """(step, minutes, loss) of the lowest finite validation loss, or None."""
        points = [p for p in zip(self.valid.steps, self.valid.minutes, self.valid.loss) if math.isfinite(p[2])]
        return min(points, key=lambda p: p[2]) if points else None


# ------------------------------------------------------------------ reading
def _number(value: Any) -> float:
    """A JSON value as a float; NaN for anything that is not a number (None, strings, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _current_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records after the last place where the step goes back.

    A resumed run truncates metrics.jsonl before it logs again, so steps never go
    back in a file charlm wrote; this guards against a file appended to by hand."""
    start = 0
    for i in range(1, len(records)):
        if _number(records[i].get("step")) < _number(records[i - 1].get("step")):
            start = i
    return records[start:]


def _series(records: Iterable[dict[str, Any]], key: str) -> Series:
    rows = [(_number(r.get("step")), _number(r.get("elapsed")) / 60.0, _number(r.get(key))) for r in records]
    return Series(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows))


def _title(info: CheckpointInfo) -> str:
    """'tinyshakespeare: char level, 2 x 384 LSTM, vocabulary 65'."""
    train = info.train_config  # sectioned, or flat as runs before the sections wrote it
    section = train.get("tokenizer")
    level = (section if isinstance(section, dict) else train).get("level")
    level = level or (info.meta.get("tokenizer") or {}).get("kind")
    model = info.model_config
    parts = [f"{level} level"] if level else []
    parts.append(f"{model.summary()}, vocabulary {model.vocab_size:,}")  # '2 x 384 LSTM', 'Kneser-Ney 5-gram'
    return f"{info.path.name}: {', '.join(parts)}"


def load_curves(directory: str | Path) -> Curves:
    """The loss curves of the run in a checkpoint directory; PlotError when it has logged none yet."""
    return _curves(open_checkpoint(directory))  # a CheckpointError names a missing or foreign directory


def _curves(info: CheckpointInfo) -> Curves:
    records = [r for r in read_metrics(info.path) if isinstance(r, dict) and r.get("type") in ("train", "valid")]
    if not records:
        raise PlotError(f"no metrics in {info.path} yet; train first (charlm train CORPUS --out {info.path})")
    records = _current_run(records)
    return Curves(
        title=_title(info),
        train=_series((r for r in records if r["type"] == "train"), "loss"),
        valid=_series((r for r in records if r["type"] == "valid"), "valid_loss"),
    )


# ------------------------------------------------------------------ PNG
def render_png(curves: Curves) -> bytes:
    """The PNG (FIGSIZE x DPI pixels): loss against steps and against minutes, side by side."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("the PNG needs matplotlib, which is not installed; pip install 'matplotlib>=3.7'") from None

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg: renders without a display, whatever backend the host program uses
    ax_steps, ax_time = fig.subplots(1, 2, sharey=True)
    best = curves.best
    scale, unit = _time_unit(curves)
    panels = (
        (ax_steps, lambda s: s.steps, lambda b: b[0], "optimiser steps"),
        (ax_time, lambda s: [m * scale for m in s.minutes], lambda b: b[1] * scale, f"elapsed training time ({unit})"),
    )
    for ax, x_of, best_x, xlabel in panels:
        if curves.train.loss:
            ax.plot(x_of(curves.train), curves.train.loss, "-", lw=1.2, color="tab:blue", label="train")
        if curves.valid.loss:
            ax.plot(x_of(curves.valid), curves.valid.loss, "o-", lw=1.2, ms=4, color="tab:orange", label="validation")
        if best is not None:
            loss = best[2]
            ax.plot(
                [best_x(best)],
                [loss],
                "*",
                ms=15,
                color="tab:red",
                mec="black",
                mew=0.6,
                label=f"best validation {loss:.4f} (ppl {math.exp(min(loss, 700.0)):.2f}) at step {best[0]:,.0f}",
            )
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    ax_steps.set_ylabel("loss (nats/token)")
    if ax_steps.get_legend_handles_labels()[0]:
        ax_steps.legend(loc="upper right", fontsize="small")
    fig.suptitle(curves.title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _time_unit(curves: Curves) -> tuple[float, str]:
    """(factor from minutes, unit name): minutes, or seconds for a short run and hours for a long one."""
    minutes = [m for m in curves.train.minutes + curves.valid.minutes if math.isfinite(m)]
    longest = max(minutes, default=0.0)
    if longest < 2:
        return 60.0, "seconds"
    if longest > 180:
        return 1 / 60, "hours"
    return 1.0, "minutes"


def write_png(directory: str | Path, path: str | Path | None = None) -> Path:
    """Write the loss PNG of a run (default DIR/loss.png) atomically; return its path."""
    info = open_checkpoint(directory)
    curves = _curves(info)
    target = Path(path) if path is not None else info.path / PNG_NAME
    if target.suffix.lower() != ".png":
        raise PlotError(f"{target} does not end in .png; the picture is a PNG, e.g. {target.with_suffix('.png')}")
    if not target.parent.is_dir():
        raise PlotError(f"cannot write {target}: {target.parent} does not exist; create it or pick another path")
    data = render_png(curves)
    atomic_write_bytes(target, data)  # temp file, os.replace: readers never see half a PNG; errors are one line
    return target


# ------------------------------------------------------------------ terminal
def terminal_plot(directory: str | Path, width: int | None = None, height: int = DEFAULT_HEIGHT) -> str:
    """The run's loss curves drawn for a terminal `width` columns wide (default: this terminal's)."""
    if width is None:
        width = shutil.get_terminal_size().columns
    return "\n".join(render_terminal(load_curves(directory), width, height))


def _padded_range(values: list[float]) -> tuple[float, float]:
    """(low, high) around the values, widened when they are all equal so a flat curve sits mid-plot."""
    lo, hi = min(values), max(values)
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.05 or 0.5
    return lo - pad, hi + pad


def _fit(text: str, width: int) -> str:
    """`text` cut to `width` characters, with an ellipsis where it was cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _summary(curves: Curves) -> str:
    """One line for a terminal too small to plot in."""
    parts = []
    train = [v for _, v in curves.train.finite()]
    if train:
        parts.append(f"train loss {train[0]:.3f} -> {train[-1]:.3f}")
    best = curves.best
    if best is not None:
        parts.append(f"best valid {best[2]:.3f} @ step {best[0]:,.0f}")
    return "; ".join(parts) or "no finite loss values to plot"


def _legend(curves: Curves, width: int) -> str:
    """The longest legend that fits: units, both curves, the best validation loss."""
    best = curves.best
    best_text = f"  {_BEST} best {best[2]:.4f} @ step {best[0]:,.0f}" if best else ""
    keys = f"{_TRAIN} train  {_VALID} valid"
    for text in (f"loss (nats/token)  {keys}{best_text}", f"{keys}{best_text}", keys):
        if len(text) <= width:
            return text
    return _fit(keys, width)


def render_terminal(curves: Curves, width: int, height: int = DEFAULT_HEIGHT) -> list[str]:
    """Train (a braille line) and validation (● markers, ◆ the best) loss against steps.

    The drawing is `height` lines, none longer than `width` and the x axis exactly
    `width`: a legend, the plot with y tick labels, the x axis and its tick labels.
    NaN losses are left out; a terminal too small for a plot gets a one-line summary."""
    width, height = max(width, 1), max(height, 1)
    points = curves.train.finite() + curves.valid.finite()
    if not points:
        return [_fit("no finite loss values to plot", width)]
    x_lo, x_hi = _padded_range([p[0] for p in points])
    y_lo, y_hi = _padded_range([p[1] for p in points])
    # Enough decimals that the top and bottom labels differ: 1.2 for a span of 3, 1.234 for 0.05.
    decimals = min(max(math.ceil(-math.log10(y_hi - y_lo)) + 1, 0), 6)
    canvas_h = height - 3  # legend, x axis, x tick labels
    y_labels = {0: y_hi, canvas_h - 1: y_lo}
    if canvas_h >= 5:
        mid = (canvas_h - 1) // 2
        y_labels[mid] = y_hi - (mid * 4 + 1.5) / (canvas_h * 4 - 1) * (y_hi - y_lo)  # the middle of that row's dots
    label_w = max(len(f"{v:.{decimals}f}") for v in y_labels.values())
    canvas_w = width - label_w - 1  # one column for the axis
    if canvas_w < _MIN_CANVAS_WIDTH or canvas_h < 1:
        return [_fit(_summary(curves), width)]

    grid = _Canvas(canvas_w, canvas_h, (x_lo, x_hi), (y_lo, y_hi))
    grid.polyline(curves.train)
    for step, loss in curves.valid.finite():
        grid.mark(step, loss, _VALID)
    best = curves.best
    if best is not None:
        grid.mark(best[0], best[2], _BEST)

    lines = [_legend(curves, width)]
    for row, cells in enumerate(grid.rows()):
        label = f"{y_labels[row]:.{decimals}f}" if row in y_labels else ""
        lines.append((f"{label:>{label_w}}" + ("┤" if label else "│") + cells).rstrip())
    lines.append(" " * label_w + "└" + "─" * canvas_w)
    lines.append(_x_ticks(grid, label_w, width))
    return lines


def _x_ticks(grid: _Canvas, offset: int, width: int) -> str:
    """Step labels under the left end, the middle and the right end of the x axis."""
    x_lo, x_hi = grid.x_range
    mid_col = grid.width // 2
    right = f"{x_hi:,.0f} steps"
    mid = f"{grid.x_at(mid_col * 2):,.0f}"
    ticks = [(offset + 1, f"{x_lo:,.0f}"), (offset + 1 + mid_col - len(mid) // 2, mid), (width - len(right), right)]
    line = [" "] * width
    taken = -1  # the last column written; a label that would touch the one before it is skipped
    for col, text in ticks:
        if col > taken + 1 and col + len(text) <= width:
            line[col : col + len(text)] = text
            taken = col + len(text)
    return "".join(line).rstrip()


class _Canvas:
    """A braille dot grid (2 x 4 dots per character) mapping (step, loss) into character cells."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float]):
        self.width, self.height = width, height
        self.x_range, self.y_range = x_range, y_range
        self.bits = [[0] * width for _ in range(height)]
        self.marks: dict[tuple[int, int], str] = {}  # (row, col) -> a marker that replaces the dots there

    def dot(self, x: float, y: float) -> tuple[int, int]:
        """The dot (column, row from the top) where a (step, loss) point falls."""
        (x_lo, x_hi), (y_lo, y_hi) = self.x_range, self.y_range
        px = round((x - x_lo) / (x_hi - x_lo) * (self.width * 2 - 1))
        py = round((y_hi - y) / (y_hi - y_lo) * (self.height * 4 - 1))
        return px, py

    def x_at(self, px: int) -> float:
        """The step at a dot column."""
        x_lo, x_hi = self.x_range
        return x_lo + px / (self.width * 2 - 1) * (x_hi - x_lo)

    def polyline(self, series: Series) -> None:
        """Join consecutive finite points with straight dotted segments; a NaN breaks the line."""
        prev: tuple[int, int] | None = None
        for step, loss in zip(series.steps, series.loss):
            if not (math.isfinite(step) and math.isfinite(loss)):
                prev = None
                continue
            here = self.dot(step, loss)
            start = prev or here
            # One dot per unit of the longer side keeps the segment connected and, for
            # monotone data, monotone: rows never go back as columns advance.
            n = max(abs(here[0] - start[0]), abs(here[1] - start[1]), 1)
            (x0, y0), (x1, y1) = start, here
            for i in range(n + 1):
                self._set(round(x0 + (x1 - x0) * i / n), round(y0 + (y1 - y0) * i / n))
            prev = here

    def mark(self, x: float, y: float, char: str) -> None:
        px, py = self.dot(x, y)
        self.marks[(py // 4, px // 2)] = char

    def _set(self, px: int, py: int) -> None:
        if 0 <= px < self.width * 2 and 0 <= py < self.height * 4:
            self.bits[py // 4][px // 2] |= _DOT[px % 2][py % 4]

    def rows(self) -> list[str]:
        return [
            "".join(self.marks.get((r, c)) or (chr(_BRAILLE + b) if b else " ") for c, b in enumerate(row))
            for r, row in enumerate(self.bits)
        ]
