"""Loss plots: the PNG (valid, right size, written atomically), the terminal drawing
(size, legend, monotone where the data is, small terminals, NaN) and `charlm plot`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm.checkpoint import store as ckpt
from charlm.cli.plot_cmd import plot_command
from charlm.data.tokenizers import fit_tokenizer
from charlm.errors import CheckpointError, StorageError
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.training import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_SIZE = (round(plot.FIGSIZE[0] * plot.DPI), round(plot.FIGSIZE[1] * plot.DPI))  # (width, height) in pixels


def train_loss(step: int) -> float:
    """Strictly decreasing in step."""
    return 1.2 + 3.0 * math.exp(-step / 150)


def valid_loss(step: int) -> float:
    """Lowest at step 600, then rising (overfitting)."""
    return 1.3 + 3.0 * math.exp(-step / 150) + (0.001 * (step - 600) if step > 600 else 0.0)


def synthetic_records(last_step: int = 1000) -> list[dict]:
    """Train records every 10 steps, validation every 100, 0.5 s per step, as charlm's trainer writes them."""
    records: list[dict] = []
    for step in range(10, last_step + 1, 10):
        records.append(
            {
                "type": "train",
                "step": step,
                "epoch": 0,
                "loss": train_loss(step),
                "lr": 3e-3,
                "tokens_per_s": 1000.0,
                "elapsed": step * 0.5,
            }
        )
        if step % 100 == 0:
            records.append(
                {
                    "type": "valid",
                    "step": step,
                    "epoch": 0,
                    "valid_loss": valid_loss(step),
                    "valid_ppl": math.exp(valid_loss(step)),
                    "valid_bpc": 2.0,
                    "elapsed": step * 0.5 + 1.0,
                    "best_valid_loss": None,
                    "improved": True,
                }
            )
    return records


def make_checkpoint(directory: Path) -> Path:
    """A tiny char-level LSTM checkpoint with no metrics yet."""
    tok = fit_tokenizer("char", "the cat sat on the mat.\n")
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, num_layers=2, hidden_size=8, emb_size=4))
    return ckpt.write_inference_checkpoint(directory, model, tok, {"level": "char"})


@pytest.fixture
def run(tmp_path) -> Path:
    """A checkpoint directory named `shakes` with a run's worth of metrics."""
    directory = make_checkpoint(tmp_path / "shakes")
    ckpt.append_metrics(directory, synthetic_records())
    return directory


def curves_of(train: list[tuple[float, float]], valid: list[tuple[float, float]] = ()) -> plot.Curves:
    """Curves from (step, loss) pairs, one minute per 100 steps."""

    def series(points):
        return plot.Series(tuple(s for s, _ in points), tuple(s / 100 for s, _ in points), tuple(v for _, v in points))

    return plot.Curves("test", series(train), series(list(valid)))


def temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def braille_rows_by_column(lines: list[str]) -> dict[int, list[int]]:
    """{column: rows holding a braille mark}, over the plot rows of a terminal drawing."""
    cols: dict[int, list[int]] = {}
    for row, line in enumerate(lines[1:-2]):  # between the legend and the x axis
        for col, ch in enumerate(line):
            if "\u2801" <= ch <= "\u28ff":
                cols.setdefault(col, []).append(row)
    return cols


# ---------------------------------------------------------------- reading metrics
def test_load_curves_reads_both_series_and_names_the_run(run):
    curves = plot.load_curves(run)
    assert curves.train.steps[:2] == (10.0, 20.0) and len(curves.train.loss) == 100
    assert curves.valid.loss[0] == pytest.approx(valid_loss(100))
    assert curves.train.minutes[-1] == pytest.approx(1000 * 0.5 / 60)
    assert curves.best == pytest.approx((600.0, (600 * 0.5 + 1) / 60, valid_loss(600)))
    vocab = ckpt.open_checkpoint(run).model_config.vocab_size
    assert curves.title == f"shakes: char level, 2 x 8 LSTM, vocabulary {vocab}"


def test_load_curves_keeps_only_the_run_after_the_step_went_back(run):
    ckpt.append_metrics(run, synthetic_records(last_step=200))  # a second run appended without truncation
    curves = plot.load_curves(run)
    assert curves.train.steps[0] == 10.0 and curves.train.steps[-1] == 200.0 and len(curves.train.steps) == 20


def test_records_that_are_not_finite_numbers_become_nan(run):
    (run / ckpt.METRICS).write_text(
        json.dumps({"type": "train", "step": 1, "loss": None, "elapsed": 1})
        + "\n"
        + json.dumps({"type": "train", "step": 2, "loss": float("nan"), "elapsed": "x"})
        + "\n"
        + json.dumps({"type": "valid", "step": 2, "valid_loss": 2.5, "elapsed": 3})
        + "\n",
        encoding="utf-8",
    )
    curves = plot.load_curves(run)
    assert all(math.isnan(v) for v in curves.train.loss) and math.isnan(curves.train.minutes[1])
    assert curves.best == (2.0, 0.05, 2.5)
    assert plot.write_png(run).read_bytes()[:8] == PNG_SIGNATURE  # NaN points are gaps, not a crash


@pytest.mark.parametrize("content", [None, "", "not json\n", json.dumps({"type": "other", "step": 1}) + "\n"])
def test_no_metrics_is_a_one_line_error_that_says_train_first(tmp_path, content):
    directory = make_checkpoint(tmp_path / "fresh")
    if content is not None:
        (directory / ckpt.METRICS).write_text(content, encoding="utf-8")
    with pytest.raises(plot.PlotError) as excinfo:
        plot.load_curves(directory)
    assert "no metrics in" in str(excinfo.value) and "train first" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_a_directory_that_is_not_a_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a charlm checkpoint"):
        plot.load_curves(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        plot.write_png(tmp_path / "missing")


# ---------------------------------------------------------------- PNG
def test_importing_the_module_does_not_import_matplotlib():
    code = "import sys, charlm.training.plot, charlm.cli.plot_cmd; print('matplotlib' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(plot.__file__).parents[1])},
    )
    assert done.stdout.strip() == "False"


def test_write_png_writes_a_readable_png_of_the_figure_size(run):
    from PIL import Image

    path = plot.write_png(run)
    assert path == run / plot.PNG_NAME
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == PNG_SIZE
        # Not a blank canvas: the curves put many colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    assert temp_files(run) == []


def test_write_png_replaces_an_old_picture_by_renaming(run):
    old = run / plot.PNG_NAME
    old.write_bytes(b"an old picture")
    old_inode = old.stat().st_ino
    plot.write_png(run)
    # A new file renamed over the old one (os.replace), not the old one rewritten in place.
    assert old.read_bytes()[:8] == PNG_SIGNATURE and old.stat().st_ino != old_inode
    assert temp_files(run) == []


def test_a_failed_write_keeps_the_old_picture_and_leaves_no_temp_file(run, monkeypatch):
    old = run / plot.PNG_NAME
    old.write_bytes(b"an old picture")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageError, match="cannot write .*Permission denied"):
        plot.write_png(run)
    assert old.read_bytes() == b"an old picture" and temp_files(run) == []


@pytest.mark.parametrize("longest,unit", [(1.5, "seconds"), (30.0, "minutes"), (600.0, "hours")])
def test_the_time_axis_unit_follows_the_length_of_the_run(longest, unit):
    curves = plot.Curves("t", plot.Series((1.0, 2.0), (0.1, longest), (2.0, 1.0)), plot.Series((), (), ()))
    scale, name = plot._time_unit(curves)
    assert name == unit and longest * scale == pytest.approx({"seconds": 90, "minutes": 30, "hours": 10}[unit])


def test_write_png_to_another_path(run, tmp_path):
    import matplotlib.image

    out = plot.write_png(run, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png" and not (run / plot.PNG_NAME).exists()
    height, width = matplotlib.image.imread(out).shape[:2]
    assert (width, height) == PNG_SIZE


def test_write_png_refuses_a_name_that_is_not_png_or_a_missing_directory(run, tmp_path):
    with pytest.raises(plot.PlotError, match=r"does not end in \.png.*curves\.png"):
        plot.write_png(run, tmp_path / "curves.jpg")
    with pytest.raises(plot.PlotError, match="does not exist; create it"):
        plot.write_png(run, tmp_path / "nowhere" / "curves.png")


# ---------------------------------------------------------------- terminal
@pytest.mark.parametrize("width,height", [(80, 16), (40, 8), (132, 30), (24, 6)])
def test_terminal_plot_fills_the_requested_size(run, width, height):
    lines = plot.terminal_plot(run, width=width, height=height).split("\n")
    assert len(lines) == height
    assert max(len(line) for line in lines) <= width
    assert len(lines[-2]) == width and lines[-2].endswith("─")  # the x axis spans the width
    assert "train" in lines[0] and "valid" in lines[0]
    assert sum(line.count("●") + line.count("◆") for line in lines) >= 2


def test_terminal_legend_gives_units_and_the_best_validation_when_there_is_room(run):
    legend = plot.terminal_plot(run, width=100, height=12).split("\n")[0]
    assert legend.startswith("loss (nats/token)")
    assert f"best {valid_loss(600):.4f} @ step 600" in legend


def test_terminal_labels_the_axes_with_the_data_range(run):
    lines = plot.terminal_plot(run, width=80, height=16).split("\n")
    assert lines[1].startswith(f"{train_loss(10):.1f}┤")
    assert lines[-3].startswith(f"{train_loss(1000):.1f}┤")
    assert lines[-1].split()[0] == "10" and lines[-1].endswith("1,000 steps")


@pytest.mark.parametrize("width,height", [(80, 16), (30, 10), (60, 5)])
def test_a_decreasing_loss_never_draws_a_mark_higher_than_the_one_before(width, height):
    lines = plot.render_terminal(curves_of([(s, train_loss(s)) for s in range(10, 1001, 10)]), width, height)
    cols = braille_rows_by_column(lines)
    assert len(cols) >= width // 2  # the line is drawn across the plot
    ordered = [cols[c] for c in sorted(cols)]
    tops, bottoms = [min(rows) for rows in ordered], [max(rows) for rows in ordered]
    assert tops == sorted(tops) and bottoms == sorted(bottoms)
    assert tops[0] == 0 and bottoms[-1] == height - 4  # from the top row to the bottom one


def test_an_increasing_loss_draws_marks_that_go_up():
    lines = plot.render_terminal(curves_of([(s, 1.0 + s / 100) for s in range(1, 101)]), 50, 12)
    tops = [min(rows) for _, rows in sorted(braille_rows_by_column(lines).items())]
    assert tops == sorted(tops, reverse=True) and tops[0] > tops[-1]


def test_a_single_point_is_drawn_in_the_middle():
    lines = plot.render_terminal(curves_of([(5, 2.0)], [(5, 2.1)]), 40, 9)
    assert len(lines) == 9
    plot_rows = lines[1:-2]
    assert sum(row.count("●") + row.count("◆") for row in plot_rows) == 1
    assert any("\u2801" <= ch <= "\u28ff" for row in plot_rows for ch in row)


def test_nan_losses_are_left_out_and_break_the_line():
    train = [(10, 3.0), (20, 2.5), (30, math.nan), (40, 2.0), (50, 1.5)]
    lines = plot.render_terminal(curves_of(train, [(20, math.nan), (50, 1.8)]), 40, 10)
    assert len(lines) == 10 and all("nan" not in line.lower() for line in lines)
    assert sum(line.count("◆") for line in lines) == 1  # the one finite validation point is the best
    all_nan = plot.render_terminal(curves_of([(10, math.nan)], [(10, math.inf)]), 40, 10)
    assert all_nan == ["no finite loss values to plot"]


@pytest.mark.parametrize("width,height", [(10, 16), (80, 3), (1, 1)])
def test_a_terminal_too_small_to_plot_gets_a_one_line_summary(run, width, height):
    lines = plot.terminal_plot(run, width=width, height=height).split("\n")
    assert len(lines) == 1 and len(lines[0]) <= width
    if width >= 80:
        train = f"train loss {train_loss(10):.3f} -> {train_loss(1000):.3f}"
        assert lines[0] == f"{train}; best valid {valid_loss(600):.3f} @ step 600"


def test_terminal_plot_defaults_to_the_terminal_width(run, monkeypatch):
    monkeypatch.setenv("COLUMNS", "57")
    lines = plot.terminal_plot(run).split("\n")
    assert len(lines) == plot.DEFAULT_HEIGHT and len(lines[-2]) == 57


# ---------------------------------------------------------------- charlm plot
def invoke(*args: object):
    return CliRunner().invoke(plot_command, [str(a) for a in args])


def test_cli_writes_the_png_and_draws_the_terminal_plot(run):
    result = invoke(run, "--width", 70, "--height", 12)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"wrote {run / plot.PNG_NAME}"
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) == 12 and len(lines[-2]) == 70 and "train" in lines[0]
    assert (run / plot.PNG_NAME).read_bytes()[:8] == PNG_SIGNATURE


def test_cli_out_and_no_terminal(run, tmp_path):
    out = tmp_path / "picture.png"
    result = invoke(run, "--out", out, "--no-terminal")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and str(out) in result.stderr
    assert out.read_bytes()[:8] == PNG_SIGNATURE and not (run / plot.PNG_NAME).exists()


def test_cli_uses_the_console_width_by_default(run):
    result = CliRunner().invoke(plot_command, [str(run)], env={"COLUMNS": "66"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) == 66


@pytest.mark.parametrize("case", ["missing", "not a checkpoint", "no metrics"])
def test_cli_errors_are_one_line_and_exit_1(tmp_path, case):
    target = {
        "missing": lambda: tmp_path / "missing",
        "not a checkpoint": lambda: tmp_path,
        "no metrics": lambda: make_checkpoint(tmp_path / "fresh"),
    }[case]()
    result = invoke(target)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    expected = {"missing": "does not exist", "not a checkpoint": "not a charlm checkpoint", "no metrics": "train first"}
    assert expected[case] in lines[0]
    assert not (tmp_path / plot.PNG_NAME).exists()
