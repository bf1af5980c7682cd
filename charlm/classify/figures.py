"""The confusion matrix as a picture (PNG, matplotlib's Agg backend: no display needed), written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from charlm.classify.metrics import Report
from charlm.errors import CharlmError
from charlm.fileio import atomic_write_bytes


def confusion_png(r: Report, title: str = "") -> bytes:
    """A heat map of the confusion matrix (rows gold, columns predicted), each cell's count written in it."""
    if r.confusion is None:
        raise CharlmError("a multi-label evaluation has no confusion matrix to draw; read the per-label table")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CharlmError(
            "the picture needs matplotlib, which is not installed; pip install 'matplotlib>=3.7'"
        ) from None
    k = len(r.labels)
    side = min(3.0 + 0.6 * k, 16.0)
    fig = Figure(figsize=(side + 1.5, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    cm = r.confusion
    rows = cm.sum(1, keepdims=True).clip(min=1)
    image = ax.imshow(cm / rows, cmap="Blues", vmin=0.0, vmax=1.0)  # shaded by the share of each gold row
    fig.colorbar(image, ax=ax, label="share of the gold label's texts")
    ax.set_xticks(range(k), labels=list(r.labels), rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), labels=list(r.labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                dark = cm[i, j] / rows[i, 0] > 0.5
                ax.text(j, i, f"{cm[i, j]:,}", ha="center", va="center", color="white" if dark else "black",
                        fontsize="small")  # fmt: skip
    ax.set_title(title or f"accuracy {r.accuracy:.3f}, macro-F1 {r.macro_f1:.3f} ({r.examples:,} texts)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_confusion_png(r: Report, path: str | Path, title: str = "") -> Path:
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise CharlmError(f"{target} does not end in .png; the picture is a PNG, e.g. {target.with_suffix('.png')}")
    if not target.parent.is_dir():
        raise CharlmError(f"cannot write {target}: {target.parent} does not exist; create it or pick another path")
    atomic_write_bytes(target, confusion_png(r, title))
    return target
