"""Dynamic evaluation: lr 0 is the static figure, a positive step learns a repetitive text, the
checkpoint never changes, and the CLI reports both figures side by side (and refuses the
parallel-scoring options --streams and --window: it scores one exact stream; --interpolate takes them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm.checkpoint import load_for_inference, write_inference_checkpoint
from charlm.cli import main
from charlm.dynamic import DynamicOptions, evaluate_file_dynamic, evaluate_text_dynamic
from charlm.evaluate import evaluate_text
from charlm.model import ModelConfig, RNNLanguageModel
from charlm.tokenizers import fit_tokenizer

TEXT = "abcabd abcabd\n" * 30  # repetitive: a model that adapts to it gains a lot


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = fit_tokenizer("char", TEXT)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, num_layers=1, hidden_size=16, emb_size=8))
    path = write_inference_checkpoint(tmp_path_factory.mktemp("dyn") / "run", model, tok)
    text = tmp_path_factory.mktemp("text") / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    return model.eval(), tok, path, text


def test_step_size_zero_is_the_static_figure_exactly(setup) -> None:
    model, tok, _, _ = setup
    static, dynamic = evaluate_text_dynamic(model, tok, TEXT, DynamicOptions(lr=0.0, segment=7))
    assert dynamic.nll == static.nll and dynamic.tokens == static.tokens == len(TEXT)
    reference = evaluate_text(model, tok, TEXT, exact=True)
    assert static.nll == pytest.approx(reference.nll, rel=1e-6)  # windows of 7 tokens instead of 256


def test_a_positive_step_learns_a_repetitive_text_and_leaves_the_model_alone(setup) -> None:
    model, tok, _, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    static, dynamic = evaluate_text_dynamic(model, tok, TEXT, DynamicOptions(lr=0.5, segment=20))
    assert dynamic.loss < static.loss - 0.2  # nats per char (measured: 1.97 -> 1.69)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_segments_do_not_depend_on_how_the_file_is_read(setup) -> None:
    model, tok, _, text = setup
    options = DynamicOptions(lr=0.3, segment=9)
    whole = evaluate_text_dynamic(model, tok, TEXT, options)
    pieces = evaluate_file_dynamic(model, tok, text, options, chunk_bytes=37)  # chunks cut across segments
    assert pieces[1].nll == whole[1].nll and pieces[0].nll == whole[0].nll


def test_cli_reports_static_and_dynamic_and_never_changes_the_checkpoint(setup) -> None:
    _, _, path, text = setup
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.iterdir() if p.is_file()}
    args = ["perplexity", str(path), str(text), "--dynamic", "--dynamic-lr", "0.5", "--dynamic-segment", "20"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dynamic"]["lr"] == 0.5 and out["dynamic"]["segment"] == 20
    t = out["total"]
    assert t["dynamic"]["loss"] < t["static"]["loss"] and t["static"]["tokens"] == len(TEXT)
    model, tok, _ = load_for_inference(path)
    assert t["static"]["nll"] == pytest.approx(evaluate_text(model, tok, TEXT, exact=True).nll, rel=1e-6)
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0 and "static" in table.stdout and "dynamic" in table.stdout
    assert digest == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--dynamic-lr", "0.1"], "--dynamic-lr applies to --dynamic only"),
        (["--dynamic", "--interpolate", "x"], "cannot be combined"),
    ],
)
def test_option_mistakes_are_one_line_errors(setup, extra: list[str], expected: str) -> None:
    _, _, path, text = setup
    result = CliRunner().invoke(main, ["perplexity", str(path), str(text), *extra])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert expected in result.output.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("extra", "flags", "does"),
    [
        (["--streams", "4"], "--streams", "does"),
        (["--window", "64"], "--window", "does"),
        (["--streams", "8", "--window", "64"], "--streams and --window", "do"),
    ],
)
def test_parallel_scoring_options_are_refused_where_one_exact_stream_is_scored(
    setup, extra: list[str], flags: str, does: str
) -> None:
    _, _, path, text = setup
    result = CliRunner().invoke(main, ["perplexity", str(path), str(text), "--dynamic", *extra])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"Error: {flags} {does} not apply to --dynamic, which scores each file as one exact stream; drop {flags}"
    ]


def test_interpolate_takes_the_parallel_scoring_options_of_plain_perplexity(setup, tmp_path: Path) -> None:
    _, _, path, _ = setup
    text = tmp_path / "long.txt"
    text.write_text(TEXT * 5, encoding="utf-8")  # 2,100 tokens: two streams, each past the 256-token warm-up
    plain = CliRunner().invoke(main, ["perplexity", str(path), str(text), "--json", "--streams", "2"])
    args = ["perplexity", str(path), str(text), "--json", "--interpolate", f"{path}:0.5"]
    result = CliRunner().invoke(main, [*args, "--streams", "2", "--window", "64"])
    assert result.exit_code == 0, result.output
    out, want = json.loads(result.stdout), json.loads(plain.stdout)["total"]["nll"]
    assert out["protocol"]["streams"] == 2 and out["protocol"]["exact"] is False
    assert out["total"]["checkpoint"]["nll"] == pytest.approx(want, rel=1e-9)
    assert out["total"]["mixture"]["nll"] == pytest.approx(want, rel=1e-9)  # a model mixed with itself


@pytest.mark.parametrize(
    ("mode", "extra"),
    [("--dynamic", []), ("--dynamic", ["--streams", "1"]), ("--dynamic", ["--exact"]), ("--interpolate", ["--exact"])],
)
def test_one_exact_stream_modes_run_with_the_defaults_or_one_stream(setup, mode: str, extra: list[str]) -> None:
    _, _, path, text = setup
    mode_args = [mode] if mode == "--dynamic" else [mode, f"{path}:0.5"]
    result = CliRunner().invoke(main, ["perplexity", str(path), str(text), *mode_args, *extra, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["protocol"]["streams"] == 1 and out["protocol"]["exact"] is True


def test_a_kn_checkpoint_is_refused_with_one_line(setup, tmp_path: Path) -> None:
    _, _, _, text = setup
    out = tmp_path / "kn"
    assert CliRunner().invoke(main, ["train", str(text), "--model", "kn", "--out", str(out), "-q"]).exit_code == 0
    result = CliRunner().invoke(main, ["perplexity", str(out), str(text), "--dynamic"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: dynamic evaluation needs a recurrent model (it takes gradient steps); drop --dynamic"
    ]
