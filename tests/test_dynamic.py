"""Dynamic evaluation: lr 0 is the static figure, a positive step learns a repetitive text, the
checkpoint never changes, and the CLI reports both figures side by side (and refuses the
parallel-scoring options --streams and --window: it scores one exact stream; --interpolate takes them)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from charlm.checkpoint.store import load_for_inference, write_inference_checkpoint
from charlm.cli import main
from charlm.data.tokenizers import fit_tokenizer
from charlm.errors import ConfigError
from charlm.evaluation.dynamic import DynamicOptions, evaluate_file_dynamic, evaluate_text_dynamic, gradient_rms
from charlm.evaluation.scoring import evaluate_text
from charlm.models.rnn import ModelConfig, RNNLanguageModel

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


def dynamic_by_hand(model, tok, text: str, lr: float, segment: int) -> float:
    """The slow reference: the summed NLL of the dynamic pass written out, one segment at a time, scoring with
    a forward that carries no gradient and stepping with a separate forward and backward."""
    ids = torch.tensor([tok.encode_array("\n")[0], *tok.encode_array(text)], dtype=torch.long)  # after a line end
    model = copy.deepcopy(model)
    state, nll = None, 0.0
    for i in range(0, len(ids) - 1, segment):
        x, y = ids[None, i : min(i + segment, len(ids) - 1)], ids[i + 1 : i + segment + 1]
        with torch.no_grad():
            logits = model(x, state).logits
            nll += F.cross_entropy(logits[0].double(), y, reduction="sum").item()
        fwd = model(x, state)
        logits, new_state = fwd.logits, fwd.state
        model.zero_grad()
        F.cross_entropy(logits[0], y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
        state = tuple(s.detach() for s in new_state)
    return nll


def test_step_size_zero_is_the_static_figure(setup) -> None:
    model, tok, _, _ = setup
    static, dynamic = evaluate_text_dynamic(model, tok, TEXT, DynamicOptions(lr=0.0, segment=7), exact=True)
    assert dynamic.tokens == static.tokens == len(TEXT)
    # gradient-enabled kernels in windows of 7 against the grad-free windows of 256: equal to float rounding
    assert dynamic.nll == pytest.approx(static.nll, rel=1e-6)
    assert static.nll == evaluate_text(model, tok, TEXT, exact=True).nll  # the static column is plain perplexity's
    parallel, _ = evaluate_text_dynamic(model, tok, TEXT * 3, DynamicOptions(lr=0.0), streams=4, warmup=64)
    assert parallel.nll == evaluate_text(model, tok, TEXT * 3, streams=4, warmup=64).nll


@pytest.mark.parametrize(("lr", "segment"), [(0.0, 7), (0.5, 20), (0.3, 9)])
def test_the_batched_pass_equals_the_segment_by_segment_reference(setup, lr: float, segment: int) -> None:
    model, tok, _, _ = setup
    _, dynamic = evaluate_text_dynamic(model, tok, TEXT[:200], DynamicOptions(lr=lr, segment=segment))
    assert dynamic.nll == pytest.approx(dynamic_by_hand(model, tok, TEXT[:200], lr, segment), rel=1e-5)


def test_rms_rule_adapts_and_its_statistics_come_from_training_text(setup) -> None:
    model, tok, _, _ = setup
    ids = tok.encode_array(TEXT)
    rms = gradient_rms(model, ids, 20, rows=4)
    assert len(rms) == len(list(model.parameters())) and all(
        r.shape == p.shape for r, p in zip(rms, model.parameters())
    )
    assert all(bool((r >= 0).all()) for r in rms) and any(bool((r > 0).any()) for r in rms)
    options = DynamicOptions(lr=0.002, segment=20, decay=0.02, rule="rms")
    static, dynamic = evaluate_text_dynamic(model, tok, TEXT, options, rms=rms)
    assert dynamic.loss < static.loss - 0.1  # nats per char (measured: 1.97 -> 1.81)
    zero = DynamicOptions(lr=0.0, segment=20, decay=0.02, rule="rms")  # no step: the decay has nothing to undo
    static, dynamic = evaluate_text_dynamic(model, tok, TEXT, zero, rms=rms, exact=True)
    assert dynamic.nll == pytest.approx(static.nll, rel=1e-6)
    with pytest.raises(ConfigError, match="gradient statistics"):
        evaluate_text_dynamic(model, tok, TEXT, options)


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


@pytest.mark.parametrize("mode", ["--dynamic", "--interpolate"])
def test_static_columns_take_the_parallel_scoring_options_of_plain_perplexity(setup, tmp_path: Path, mode) -> None:
    _, _, path, _ = setup
    text = tmp_path / "long.txt"
    text.write_text(TEXT * 5, encoding="utf-8")  # 2,100 tokens: two streams, each past the 256-token warm-up
    plain = CliRunner().invoke(main, ["perplexity", str(path), str(text), "--json", "--streams", "2"])
    mode_args = [mode] if mode == "--dynamic" else [mode, f"{path}:0.5"]
    result = CliRunner().invoke(main, ["perplexity", str(path), str(text), "--json", *mode_args, "--streams", "2"])
    assert result.exit_code == 0, result.output
    out, want = json.loads(result.stdout), json.loads(plain.stdout)["total"]["nll"]
    assert out["protocol"]["streams"] == 2 and out["protocol"]["exact"] is False
    first = "static" if mode == "--dynamic" else "checkpoint"
    assert out["total"][first]["nll"] == pytest.approx(want, rel=1e-9)
    if mode == "--interpolate":
        assert out["total"]["mixture"]["nll"] == pytest.approx(want, rel=1e-9)  # a model mixed with itself


def test_rms_rule_without_a_training_text_is_a_one_line_error(setup) -> None:
    _, _, path, text = setup
    result = CliRunner().invoke(main, ["perplexity", str(path), str(text), "--dynamic", "--dynamic-rule", "rms"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert "training text for --dynamic-rule rms" in line and line.endswith("use --dynamic-rule sgd")


@pytest.mark.parametrize(
    ("mode", "extra"),
    [("--dynamic", ["--streams", "1"]), ("--dynamic", ["--exact"]), ("--interpolate", ["--exact"])],
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
