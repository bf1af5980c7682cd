"""`charlm perplexity`: the table, the JSON, per-file errors, checkpoint errors, and
agreement with the validation loss that training recorded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import charlm.cli.perplexity_cmd  # noqa: F401  (registers the command on `main`)
from charlm.checkpoint.store import load_for_inference, read_metrics, write_inference_checkpoint
from charlm.cli import main
from charlm.data.tokenizers import fit_tokenizer
from charlm.evaluation.scoring import evaluate_file, evaluate_text
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.training import TrainConfig, train

TEXT = (
    "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met on a mat.\nthe end of the tale is near.\n"
) * 12


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A char-level checkpoint of a small random LSTM fitted to TEXT's characters."""
    tok = fit_tokenizer("char", TEXT)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, num_layers=1, hidden_size=16, emb_size=8))
    return write_inference_checkpoint(tmp_path_factory.mktemp("ckpt") / "run", model, tok)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "short": tmp_path / "short.txt",
        "long": tmp_path / "long.txt",
        "empty": tmp_path / "empty.txt",
        "binary": tmp_path / "binary.bin",
        "latin1": tmp_path / "latin1.txt",
        "unseen": tmp_path / "unseen.txt",
    }
    paths["short"].write_text("the cat sat.\n", encoding="utf-8")
    paths["long"].write_text(TEXT * 2, encoding="utf-8")
    paths["empty"].write_bytes(b"")
    paths["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    paths["latin1"].write_bytes("the caf\xe9 sat.\n".encode("latin-1"))
    paths["unseen"].write_text("the zebra ate ñoquis.\n", encoding="utf-8")
    paths["missing"] = tmp_path / "nope.txt"
    return paths


def run(*args: str) -> CliRunner.invoke:
    return CliRunner().invoke(main, ["perplexity", *map(str, args)])


# ------------------------------------------------------------------ results
def test_json_prints_only_json_with_token_weighted_total(ckpt, files):
    result = run(ckpt, files["short"], files["long"], "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # nothing but JSON on stdout
    model, tok, _ = load_for_inference(ckpt)
    short, long = (evaluate_file(model, tok, files[k]) for k in ("short", "long"))
    a, b = out["files"]
    assert a["path"] == str(files["short"]) and a["tokens"] == short.tokens == 13
    assert b["tokens"] == long.tokens == len(TEXT) * 2
    assert a["nll"] == pytest.approx(short.nll) and b["nll"] == pytest.approx(long.nll)
    t = out["total"]
    assert t["tokens"] == a["tokens"] + b["tokens"]
    assert t["loss"] == pytest.approx((a["nll"] + b["nll"]) / t["tokens"])
    assert t["bits_per_char"] == pytest.approx((a["nll"] + b["nll"]) / math.log(2) / (a["chars"] + b["chars"]))
    assert t["loss"] != pytest.approx((a["loss"] + b["loss"]) / 2, rel=1e-4)  # not a mean of means
    assert out["level"] == "char" and out["protocol"]["exact"] is False


def test_exact_flag_gives_the_one_stream_figure(ckpt, files):
    result = run(ckpt, files["long"], "--json", "--exact")
    assert result.exit_code == 0, result.output
    model, tok, _ = load_for_inference(ckpt)
    want = evaluate_text(model, tok, TEXT * 2, exact=True)
    got = json.loads(result.stdout)["files"][0]
    assert got["nll"] == pytest.approx(want.nll, rel=1e-9)
    assert json.loads(result.stdout)["protocol"]["streams"] == 1


def test_table_shows_each_file_and_the_total(ckpt, files):
    result = run(ckpt, files["short"], files["long"])
    assert result.exit_code == 0, result.output
    model, tok, _ = load_for_inference(ckpt)
    short, long = (evaluate_file(model, tok, files[k]) for k in ("short", "long"))
    out = result.stdout
    assert "short.txt" in out and "long.txt" in out and "total" in out
    assert f"{short.perplexity:.3f}" in out and f"{long.bits_per_char:.4f}" in out
    assert f"{(short + long).perplexity:.3f}" in out
    assert "perplexity" in out and "bits/" in out


def test_unseen_characters_are_reported(ckpt, files):
    result = run(ckpt, files["unseen"])
    assert result.exit_code == 0, result.output
    assert "never seen in training" in result.stdout and "'z'" in result.stdout and "'ñ'" in result.stdout
    long_name = files["unseen"].with_name("a-rather-long-file-name-" * 3 + ".txt")
    long_name.write_text("the zebra ate ñoquis.\n" * 500, encoding="utf-8")
    table = run(ckpt, long_name).stdout
    assert "2,500 (22.7%)" in table and "11,000" in table  # on 80 columns only the file name folds, no figure is cut
    got = json.loads(run(ckpt, files["unseen"], "--json").stdout)["files"][0]
    assert got["oov"] == 5 and got["unknown"] == ["z", "b", "ñ", "q", "u"]  # scored as <unk>, counted


def test_word_level_reports_oov_words(tmp_path):
    tok = fit_tokenizer("word", TEXT)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, num_layers=1, hidden_size=8, emb_size=4))
    ck = write_inference_checkpoint(tmp_path / "w", model, tok)
    f = tmp_path / "w.txt"
    f.write_text("the zebra sat on the sofa.\nthe cat sat on the mat.\n", encoding="utf-8")
    result = run(ck, f, "--json")
    got = json.loads(result.stdout)["files"][0]
    assert got["tokens"] == 14 and got["oov"] == 2 and got["oov_rate"] == pytest.approx(2 / 14)
    assert "2 out-of-vocabulary words scored as <unk> ('zebra', 'sofa.')" in run(ck, f).stdout


# ------------------------------------------------------------------ bad input
def test_bad_files_are_reported_and_the_others_still_evaluated(ckpt, files):
    bad = ["missing", "empty", "binary", "latin1"]
    result = run(ckpt, files["short"], *(files[k] for k in bad), "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    entries = {Path(e["path"]).name: e for e in out["files"]}
    assert entries["short.txt"]["tokens"] == 13 and "error" not in entries["short.txt"]
    assert "not found" in entries["nope.txt"]["error"]
    assert "empty" in entries["empty.txt"]["error"]
    assert "binary" in entries["binary.bin"]["error"]
    assert "UTF-8" in entries["latin1.txt"]["error"] and "--encoding-errors replace" in entries["latin1.txt"]["error"]
    assert out["total"]["tokens"] == 13  # the total covers the files that were evaluated
    assert "4 of 5 files could not be evaluated" in result.stderr


def test_bad_files_appear_in_the_table_report(ckpt, files):
    result = run(ckpt, files["short"], files["missing"], files["binary"])
    assert result.exit_code == 1
    assert "short.txt" in result.stdout and "error" in result.stdout
    assert "nope.txt" in result.stdout and "looks binary" in result.stdout
    assert "Traceback" not in result.output


def test_encoding_errors_replace_evaluates_invalid_utf8(ckpt, files):
    result = run(ckpt, files["latin1"], "--encoding-errors", "replace", "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)["files"][0]
    assert got["chars"] == 14 and got["oov"] == 1 and got["unknown"] == ["\ufffd"]


def test_every_file_bad_exits_nonzero_with_no_total(ckpt, files):
    result = run(ckpt, files["empty"], "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["total"] is None


@pytest.mark.parametrize("damage", ["missing", "not_a_checkpoint", "corrupt_weights", "corrupt_json"])
def test_missing_or_corrupt_checkpoint_is_a_one_line_error(tmp_path, ckpt, files, damage):
    import shutil

    target = tmp_path / "ck"
    if damage == "missing":
        target = tmp_path / "no-such-run"
    elif damage == "not_a_checkpoint":
        target.mkdir()
    else:
        shutil.copytree(ckpt, target)
        name = "best.safetensors" if damage == "corrupt_weights" else "checkpoint.json"
        (target / name).write_bytes(b"\x00garbage{")
    result = run(target, files["short"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(target) in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


def test_damaged_weights_are_refused_in_one_line_and_no_verify_scores_them(tmp_path, ckpt, files):
    import shutil

    from charlm.checkpoint.store import BEST

    target = tmp_path / "ck"
    shutil.copytree(ckpt, target)
    data = bytearray((target / BEST).read_bytes())
    data[-2:] = bytes(b ^ 0xFF for b in data[-2:])  # the end of the data section
    (target / BEST).write_bytes(bytes(data))
    result = run(target, files["short"])
    assert result.exit_code == 1 and "Traceback" not in result.output and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {target / BEST} is damaged") and "--no-verify" in line
    assert run(target, files["short"], "--no-verify", "--json").exit_code == 0


def test_usage_errors(ckpt, files):
    assert run(ckpt).exit_code == 2  # no files
    assert run(ckpt, files["short"], "--exact", "--streams", "8").exit_code == 2
    assert run(ckpt, files["short"], "--streams", "0").exit_code == 2
    assert run(ckpt, files["short"], "--which", "worst").exit_code == 2


def test_unavailable_device_is_a_one_line_error(ckpt, files):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = run(ckpt, files["short"], "--device", "cuda")
    assert result.exit_code == 1 and "no CUDA device" in result.stderr


# ------------------------------------------------------------------ agreement with training
def test_reproduces_the_validation_loss_recorded_by_training(tmp_path, held_out_text):
    corpus = tmp_path / "tales.txt"
    corpus.write_text(TEXT * 32, encoding="utf-8")  # 40k characters, the last 4k held out
    config = TrainConfig.from_options(
        corpus=(str(corpus),),
        out=str(tmp_path / "run"),
        hidden_size=48,
        emb_size=16,
        num_layers=1,
        batch_size=8,
        bptt=32,
        max_steps=100,
        eval_interval=50,
        log_interval=25,
        eval_streams=8,
        warmup_steps=2,
        lr=2e-2,
        device="cpu",
        seed=3,
    )
    train(config)
    valid = tmp_path / "valid.txt"
    valid.write_text(held_out_text(Path(config.data.corpus[0]), config.data.valid_fraction), encoding="utf-8")
    recorded = min(r["valid_loss"] for r in read_metrics(tmp_path / "run") if r.get("type") == "valid")
    assert recorded < 0.5 * math.log(21)  # trained: agreement with a flat model would prove nothing
    for flags in ([], ["--exact"]):
        result = run(tmp_path / "run", valid, "--json", *flags)
        assert result.exit_code == 0, result.output
        got = json.loads(result.stdout)["files"][0]["loss"]
        assert got == pytest.approx(recorded, rel=0.005), (got, recorded)
