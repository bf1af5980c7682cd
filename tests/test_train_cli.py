"""`charlm train` through click's CliRunner: tiny runs, the three levels, resume rules, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from charlm.checkpoint import store as ckpt
from charlm.cli import main

TINY = ["--hidden", "16", "--emb", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["train", *map(str, args)])


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert result.exception is None


def assert_one_line_error(result: Result, *, code: int, contains: str) -> str:
    """A user mistake: non-zero exit, no traceback, the error on one line that says what is wrong."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    error = lines[-1]
    assert error.startswith("Error: ")
    assert contains in error
    if code == 1:  # a domain error is the whole output
        assert lines == [error]
    return error


def test_trains_a_tiny_model_in_seconds(tiny_corpus, out_dir):
    result = invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "20", "--eval-interval", "10", "--quiet")
    assert_ok(result)
    assert result.output == ""  # --quiet: nothing for scripts to filter
    for name in ("checkpoint.json", "tokenizer.json", "best.safetensors", "last.safetensors", "metrics.jsonl"):
        assert (out_dir / name).is_file(), name
    _, data = ckpt.load_training_state(out_dir)
    assert data["trainer"]["step"] == 20
    valid = [r for r in ckpt.read_metrics(out_dir) if r["type"] == "valid"]
    assert [r["step"] for r in valid] == [10, 20]
    model, _, info = ckpt.load_for_inference(out_dir)
    assert info.model_config.hidden_size == 16 and info.model_config.emb_size == 8


def test_without_quiet_a_summary_table_appears(tiny_corpus, out_dir):
    result = invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "6", "--eval-interval", "3")
    assert_ok(result)
    assert "charlm train: summary" in result.stdout
    assert "max steps" in result.stdout
    assert "best validation" in result.stdout
    assert "char level" in result.stderr  # the progress header goes to stderr


@pytest.mark.parametrize(
    "level,extra,side_file",
    [("word", [], None), ("subword", ["--subword-vocab-size", "300"], "tokenizer.model")],
)
def test_word_and_subword_levels_train(tiny_corpus, out_dir, level, extra, side_file):
    result = invoke(
        tiny_corpus,
        "--out",
        out_dir,
        "--level",
        level,
        *extra,
        *TINY,
        "--bptt",
        "8",
        "--max-steps",
        "6",
        "--eval-interval",
        "3",
        "--quiet",
    )
    assert_ok(result)
    meta = json.loads((out_dir / "checkpoint.json").read_text())
    assert meta["tokenizer"]["kind"] == level
    assert meta["train"]["tokenizer"]["level"] == level
    if side_file:
        assert (out_dir / side_file).is_file()
    _, tok, _ = ckpt.load_for_inference(out_dir)
    assert tok.kind == level


def test_time_budget_stops_by_time(tiny_corpus, out_dir):
    result = invoke(
        tiny_corpus, "--out", out_dir, *TINY, "--time-budget", "2s", "--eval-interval", "50", "--dropout", "0"
    )
    assert_ok(result)
    assert "time budget" in result.stdout
    _, data = ckpt.load_training_state(out_dir)
    assert 1.0 <= data["trainer"]["elapsed"] < 30.0
    assert json.loads((out_dir / "checkpoint.json").read_text())["train"]["run"]["time_budget"] == 2.0


# ---------------------------------------------------------------- an existing run
@pytest.fixture
def trained(tiny_corpus, out_dir) -> Path:
    assert_ok(invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "4", "--eval-interval", "2", "--quiet"))
    return out_dir


def test_resume_continues_the_run(tiny_corpus, trained):
    result = invoke(tiny_corpus, "--out", trained, "--resume", "--max-steps", "8", "--quiet")
    assert_ok(result)
    _, data = ckpt.load_training_state(trained)
    assert data["trainer"]["step"] == 8
    steps = [r["step"] for r in ckpt.read_metrics(trained) if r["type"] == "valid"]
    assert steps == [2, 4, 6, 8]


def test_resume_keeps_the_runs_own_intervals_and_validation_file(tiny_corpus, tiny_text, tmp_path):
    """Options not restated on --resume keep the run's values, not click's defaults."""
    valid = tmp_path / "valid.txt"
    valid.write_text(tiny_text[:300], encoding="utf-8")
    out = tmp_path / "run"
    assert_ok(
        invoke(
            tiny_corpus,
            "--out",
            out,
            "--valid",
            valid,
            *TINY,
            "--max-steps",
            "3",
            "--eval-interval",
            "3",
            "--log-interval",
            "1",
            "--quiet",
        )
    )
    assert_ok(invoke(tiny_corpus, "--out", out, "--resume", "--max-steps", "6", "--quiet"))
    records = ckpt.read_metrics(out)
    assert [r["step"] for r in records if r["type"] == "valid"] == [3, 6]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert {r["valid_tokens"] for r in records if r["type"] == "valid"} <= {299, 300}  # valid.txt, not a held-out tenth
    assert ckpt.open_checkpoint(out).train_config["data"]["valid"] == [str(valid)]


def test_the_same_command_plus_resume_equals_one_long_run(tiny_corpus, tmp_path):
    """N steps, then the same command line with --resume and a 2N limit == 2N steps in one go."""
    flags = [
        *TINY,
        "--schedule",
        "constant",
        "--eval-interval",
        "2",
        "--log-interval",
        "2",
        "--dropout",
        "0.1",
        "--quiet",
    ]
    assert_ok(invoke(tiny_corpus, "--out", tmp_path / "a", *flags, "--max-steps", "8"))
    assert_ok(invoke(tiny_corpus, "--out", tmp_path / "b", *flags, "--max-steps", "4"))
    assert_ok(invoke(tiny_corpus, "--out", tmp_path / "b", *flags, "--max-steps", "8", "--resume"))

    def figures(out):
        return [(r["type"], r["step"], r.get("loss", r.get("valid_loss"))) for r in ckpt.read_metrics(out)]

    a, b = figures(tmp_path / "a"), figures(tmp_path / "b")
    assert [x[:2] for x in a] == [x[:2] for x in b]
    assert [x[2] for x in b] == pytest.approx([x[2] for x in a], rel=1e-6)


def test_a_refused_start_leaves_the_directory_reusable(tiny_corpus, out_dir):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    result = invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "2", "--device", "cuda", "--quiet")
    assert_one_line_error(result, code=1, contains="CUDA")
    assert not (out_dir / "checkpoint.json").exists()
    assert_ok(invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "2", "--device", "cpu", "--quiet"))


def test_a_directory_holding_a_run_is_refused_unless_asked(tiny_corpus, trained):
    before = (trained / "best.safetensors").read_bytes()
    result = invoke(tiny_corpus, "--out", trained, *TINY, "--max-steps", "4", "--quiet")
    assert_one_line_error(result, code=1, contains="already holds a run")
    assert (trained / "best.safetensors").read_bytes() == before
    result = invoke(
        tiny_corpus,
        "--out",
        trained,
        *TINY,
        "--hidden",
        "8",
        "--max-steps",
        "2",
        "--eval-interval",
        "2",
        "--overwrite",
        "--quiet",
    )
    assert_ok(result)
    assert ckpt.open_checkpoint(trained).model_config.hidden_size == 8


def test_resume_with_a_changed_model_option_is_refused(tiny_corpus, trained):
    result = invoke(tiny_corpus, "--out", trained, "--resume", "--hidden", "64", "--max-steps", "8")
    assert_one_line_error(result, code=1, contains="--hidden")
    assert ckpt.open_checkpoint(trained).model_config.hidden_size == 16


def test_resume_on_an_empty_directory_is_refused(tiny_corpus, tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke(tiny_corpus, "--out", tmp_path / "empty", "--resume", "--max-steps", "2")
    assert_one_line_error(result, code=1, contains="nothing to resume")
    result = invoke(tiny_corpus, "--out", tmp_path / "absent", "--resume", "--max-steps", "2")
    assert_one_line_error(result, code=1, contains="nothing to resume")


def test_a_diverging_run_stops_with_one_line(tiny_corpus, out_dir):
    result = invoke(
        tiny_corpus,
        "--out",
        out_dir,
        *TINY,
        "--optimizer",
        "sgd",
        "--lr",
        "1e6",
        "--clip",
        "0",
        "--warmup-steps",
        "0",
        "--max-steps",
        "30",
        "--log-interval",
        "1",
        "--quiet",
    )
    assert_one_line_error(result, code=1, contains="diverged")


# ---------------------------------------------------------------- bad input
@pytest.fixture
def files(tmp_path, tiny_corpus) -> dict[str, Path]:
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "short.txt").write_text("hello world\n", encoding="utf-8")
    (tmp_path / "adir").mkdir()
    return {
        "tiny": tiny_corpus,
        "empty": tmp_path / "empty.txt",
        "short": tmp_path / "short.txt",
        "missing": tmp_path / "missing.txt",
        "adir": tmp_path / "adir",
        "out": tmp_path / "out",
    }


DOMAIN_ERRORS = [
    (["{missing}"], "not found"),
    (["{empty}"], "is empty"),
    (["{adir}"], "holds no files"),
    (["{short}"], "fewer than one window"),
    (["{tiny}", "--valid", "{missing}"], "not found"),
    (["{tiny}", "--valid", "{empty}"], "is empty"),
    (["{tiny}", "--resume", "--overwrite"], "--resume and --overwrite"),
    (["{tiny}", "--out", "{tiny}"], "is a file"),
    (["{tiny}", "--device", "tpu"], "unknown device"),
    (["{tiny}", *TINY, "--precision", "fp16", "--device", "cpu"], "fp16"),
    (["{tiny}", "--tie-weights", "--hidden", "16", "--emb", "16", "--cell", "bogus"], "bogus"),
]


@pytest.mark.parametrize("args,contains", DOMAIN_ERRORS, ids=[" ".join(a) for a, _ in DOMAIN_ERRORS])
def test_domain_errors_are_one_line_with_exit_1(files, args, contains):
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(files["out"])]
    result = invoke(*argv, "--max-steps", "2", "--quiet")
    if "bogus" in args:  # the click Choice catches an unknown cell first: a usage error
        assert_one_line_error(result, code=2, contains="bogus")
    else:
        assert_one_line_error(result, code=1, contains=contains)


USAGE_ERRORS = [
    (["--dropout", "1.5"], "--dropout"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--bptt", "0"], "--bptt"),
    (["--hidden", "0"], "--hidden"),
    (["--time-budget", "abc"], "--time-budget"),
    (["--time-budget", "0s"], "--time-budget"),
    (["--valid-fraction", "1"], "--valid-fraction"),
    (["--valid-fraction", "0"], "--valid-fraction"),
    (["--max-steps", "0"], "--max-steps"),
    (["--epochs", "0"], "--epochs"),
    (["--level", "sentence"], "--level"),
    (["--momentum", "1"], "--momentum"),
]


@pytest.mark.parametrize("args,flag", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_out_of_range_values_are_usage_errors(files, args, flag):
    result = invoke(files["tiny"], "--out", files["out"], *args, "--quiet")
    assert_one_line_error(result, code=2, contains=flag)
    assert not files["out"].exists()  # nothing was started


def test_no_corpus_is_a_usage_error():
    result = invoke()
    assert_one_line_error(result, code=2, contains="CORPUS")


# ---------------------------------------------------------------- what a user sees while it trains
def test_off_a_terminal_progress_is_plain_lines_that_are_never_cropped(tiny_corpus, tmp_path):
    out = tmp_path / ("a-rather-long-directory-name-" * 4)  # longer than any terminal
    result = invoke(tiny_corpus, "--out", out, *TINY, "--max-steps", "6", "--log-interval", "2", "--eval-interval", "3")
    assert_ok(result)
    assert str(out) in result.stderr  # whole, on one line
    steps = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["2", "4", "6"]
    assert all("loss" in line and "tok/s" in line and "…" not in line for line in steps)
    valid = [line for line in result.stderr.splitlines() if line.startswith("valid step ")]
    assert len(valid) == 2 and all("bpc" in line for line in valid)
    assert "best validation:" in result.stdout and "…" not in result.stdout


def test_each_validation_prints_and_records_a_sample(tiny_corpus, out_dir):
    result = invoke(
        tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "4", "--eval-interval", "2", "--sample-length", "30"
    )
    assert_ok(result)
    assert result.stderr.count("sample at step") == 2
    samples = [r["sample"] for r in ckpt.read_metrics(out_dir) if r["type"] == "valid"]
    assert len(samples) == 2 and all(s["prompt"] and len(s["text"]) <= 30 for s in samples)
    assert all(f"  | {s['prompt']}" in result.stderr for s in samples)
    quiet = invoke(tiny_corpus, "--out", out_dir, "--resume", "--max-steps", "6", "--no-samples")
    assert_ok(quiet)
    assert "sample at step" not in quiet.stderr
    assert [r["step"] for r in ckpt.read_metrics(out_dir) if r["type"] == "valid"] == [2, 4, 6]
