"""Kneser-Ney runs through the CLI: `train --model kn`, `generate` and `perplexity` on its checkpoint,
and `perplexity --interpolate` of a recurrent and an n-gram model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from charlm.checkpoint import store as ckpt
from charlm.cli import main
from charlm.data.tokenizers import fit_tokenizer
from charlm.evaluation.scoring import context_id
from charlm.models.ngram import KneserNeyModel
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.sampling import DecodingOptions, generate

TEXT = (
    "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met on a mat.\nthe end of the tale is near.\n"
) * 12


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [*map(str, args)])


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ")
    return lines[-1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def kn_ckpt(corpus: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kn") / "run"
    result = invoke("train", corpus, "--model", "kn", "--order", "3", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def rnn_ckpt(corpus: Path, tmp_path_factory) -> Path:
    """A tiny recurrent run on the same corpus (same tokenizer as kn_ckpt), trained for a few steps."""
    out = tmp_path_factory.mktemp("rnn") / "run"
    tiny = ["--hidden", "16", "--emb", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16", "--lr", "0.01"]
    result = invoke("train", corpus, "--out", out, *tiny, "--max-steps", "30", "--eval-interval", "30", "--quiet")
    assert result.exit_code == 0, result.output
    return out


def text_file(tmp_path: Path, text: str = TEXT[:300]) -> Path:
    path = tmp_path / "held.txt"
    path.write_text(text, encoding="utf-8")
    return path


def perplexity_json(*args: str | Path) -> dict:
    result = invoke("perplexity", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ------------------------------------------------------------------ train
def test_kn_run_is_a_checkpoint_directory_with_arpa_and_no_weights(kn_ckpt: Path, corpus: Path, held_out_text) -> None:
    names = {p.name for p in kn_ckpt.iterdir()}
    assert {"checkpoint.json", "tokenizer.json", "metrics.jsonl", ckpt.ARPA} <= names
    assert not names & {ckpt.BEST, ckpt.LAST, ".staging", ".swap.json"}
    meta = json.loads((kn_ckpt / "checkpoint.json").read_text())
    assert meta["model_kind"] == "kn" and meta["model"]["order"] == 3 and meta["train"]["model"]["kind"] == "kn"
    model, tok, info = ckpt.load_for_inference(kn_ckpt)
    assert isinstance(model, KneserNeyModel) and info.model_kind == "kn" and model.order == 3
    # the validation figure of metrics.jsonl is `charlm perplexity`'s on the held-out text
    [rec] = [r for r in ckpt.read_metrics(kn_ckpt) if r["type"] == "valid"]
    path = text_file(kn_ckpt.parent, held_out_text(corpus))
    out = perplexity_json(kn_ckpt, path)
    assert out["total"]["loss"] == pytest.approx(rec["valid_loss"], rel=1e-9)
    assert out["total"]["tokens"] == rec["valid_tokens"] and out["protocol"]["exact"] is True


def test_kn_perplexity_equals_the_models_own_token_logprobs(kn_ckpt: Path, tmp_path: Path) -> None:
    text = "the cat met a dog on the log.\nthe end.\n"
    out = perplexity_json(kn_ckpt, text_file(tmp_path, text))
    model, tok, _ = ckpt.load_for_inference(kn_ckpt)
    ids = torch.tensor([context_id(tok), *tok.encode(text)])
    lp, _ = model.token_logprobs(ids[None, :-1], ids[None, 1:])
    assert out["total"]["tokens"] == len(text)
    assert out["total"]["nll"] == pytest.approx(-float(lp.sum()), rel=1e-12)


def test_a_kn_run_replaces_a_recurrent_one_whole(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tok = fit_tokenizer("char", TEXT)
    ckpt.write_inference_checkpoint(out, RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, hidden_size=4)), tok)
    assert "already holds a run" in one_line_error(invoke("train", corpus, "--model", "kn", "--out", out, "-q"))
    result = invoke("train", corpus, "--model", "kn", "--order", "2", "--out", out, "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    assert not (out / ckpt.BEST).exists() and (out / ckpt.ARPA).is_file()
    assert ckpt.open_checkpoint(out).model_config.order == 2  # type: ignore[union-attr]


def test_old_checkpoints_without_a_model_kind_load_as_recurrent(tmp_path: Path) -> None:
    tok = fit_tokenizer("char", TEXT)
    out = ckpt.write_inference_checkpoint(
        tmp_path / "old", RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, hidden_size=4)), tok
    )
    meta = json.loads((out / "checkpoint.json").read_text())
    del meta["model_kind"]
    (out / "checkpoint.json").write_text(json.dumps(meta))
    model, _, info = ckpt.load_for_inference(out)
    assert isinstance(model, RNNLanguageModel) and info.model_kind == "rnn"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "kn", "--hidden", "8", "--lr", "0.1"], "--hidden, --lr do not apply to --model kn"),
        (["--model", "kn", "--time-budget", "1m"], "--time-budget does not apply to --model kn"),
        (["--order", "3"], "--order applies to --model kn only"),
    ],
)
def test_options_that_make_no_sense_are_one_line_errors(corpus: Path, tmp_path: Path, args, expected) -> None:
    assert expected in one_line_error(invoke("train", corpus, "--out", tmp_path / "x", *args))


def test_a_kn_run_cannot_be_resumed(kn_ckpt: Path, corpus: Path) -> None:
    error = one_line_error(invoke("train", corpus, "--out", kn_ckpt, "--resume"))
    assert "no training state to resume" in error


# ------------------------------------------------------------------ generate
@pytest.mark.parametrize("strategy", [["-s", "greedy"], ["--top-k", "3", "--seed", "5"], ["-s", "beam", "-b", "3"]])
def test_generate_runs_on_a_kn_checkpoint(kn_ckpt: Path, strategy: list[str]) -> None:
    result = invoke("generate", kn_ckpt, "-p", "the ", "-n", "20", "--json", *strategy)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    texts = [r["text"] for r in out["results"]] if "results" in out else [out["text"]]
    assert texts and all(texts) and all(set(t) <= set(TEXT) for t in texts)
    if strategy[1] == "greedy":
        model, tok, _ = ckpt.load_for_inference(kn_ckpt)
        [expected] = generate(model, tok, "the ", DecodingOptions(strategy="greedy", max_new_tokens=20))
        assert texts[0] == expected.text


def test_the_repl_runs_on_a_kn_checkpoint(kn_ckpt: Path) -> None:
    """`generate --interactive` reads prompts and settings for an n-gram model as for a recurrent one."""
    model, tok, _ = ckpt.load_for_inference(kn_ckpt)
    [expected] = generate(model, tok, "the ", DecodingOptions(strategy="greedy", max_new_tokens=20))
    result = CliRunner().invoke(
        main, ["generate", str(kn_ckpt), "--interactive"], input="/temperature 0\n/length 20\nthe \n/quit\n"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip("\n") == expected.text.rstrip("\n")


# ------------------------------------------------------------------ interpolation
def test_interpolation_weights_one_and_zero_are_each_model_alone(rnn_ckpt: Path, kn_ckpt: Path, tmp_path) -> None:
    path = text_file(tmp_path)
    rnn_alone = perplexity_json(rnn_ckpt, path, "--exact")["total"]["nll"]
    kn_alone = perplexity_json(kn_ckpt, path)["total"]["nll"]
    for w, alone in ((0.0, rnn_alone), (1.0, kn_alone)):
        out = perplexity_json(rnn_ckpt, path, "--interpolate", f"{kn_ckpt}:{w}")
        t = out["total"]
        assert t["checkpoint"]["nll"] == pytest.approx(rnn_alone, rel=1e-9)
        assert t["interpolate"]["nll"] == pytest.approx(kn_alone, rel=1e-9)
        assert t["mixture"]["nll"] == pytest.approx(alone, rel=1e-9)
    t = perplexity_json(rnn_ckpt, path, "--interpolate", f"{kn_ckpt}:0.4")["total"]
    a, b, mix = t["checkpoint"]["nll"], t["interpolate"]["nll"], t["mixture"]["nll"]
    assert mix <= 0.6 * a + 0.4 * b + 1e-9  # log of a mixture >= the mixture of logs (Jensen)


def test_interpolation_weight_is_chosen_on_the_validation_text(rnn_ckpt: Path, kn_ckpt: Path, tmp_path) -> None:
    out = perplexity_json(rnn_ckpt, text_file(tmp_path), "--interpolate", str(kn_ckpt))
    w = out["interpolate"]["weight"]
    assert 0.0 <= w <= 1.0 and out["interpolate"]["chosen"].startswith("chosen on")
    assert round(w * 100) == pytest.approx(w * 100)  # a point of the 0.01 grid
    table = invoke("perplexity", rnn_ckpt, text_file(tmp_path), "--interpolate", str(kn_ckpt))
    assert table.exit_code == 0 and f"w = {w:g}" in table.stdout


def test_interpolation_refuses_another_tokenizer(rnn_ckpt: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("zebras quickly jump\n" * 20, encoding="utf-8")
    out = tmp_path / "kn-other"
    assert invoke("train", other, "--model", "kn", "--order", "2", "--out", out, "-q").exit_code == 0
    error = one_line_error(invoke("perplexity", rnn_ckpt, text_file(tmp_path), "--interpolate", out))
    assert "another tokenizer" in error


@pytest.mark.parametrize("spec", ["{kn}:1.5", "{kn}:-0.1"])
def test_a_weight_outside_the_unit_interval_is_refused(rnn_ckpt: Path, kn_ckpt: Path, tmp_path, spec: str) -> None:
    error = one_line_error(
        invoke("perplexity", rnn_ckpt, text_file(tmp_path), "--interpolate", spec.format(kn=kn_ckpt))
    )
    assert "[0, 1]" in error


def test_kn_files_are_unchanged_by_reading(kn_ckpt: Path, tmp_path: Path) -> None:
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in kn_ckpt.iterdir() if p.is_file()}
    perplexity_json(kn_ckpt, text_file(tmp_path))
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in kn_ckpt.iterdir() if p.is_file()}
    assert before == after
