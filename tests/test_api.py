"""The library face (`charlm.load`, `LanguageModel`, `charlm.train`) against the command line: a checkpoint
trained here by `charlm.train`, whose texts and figures must equal what `charlm generate --json` and
`charlm perplexity --json` print for the same options, plus the bundled Kneser-Ney checkpoint and bad input."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import charlm
from charlm.cli import main

V1 = Path(__file__).parent / "fixtures" / "v1"
LINES = (
    "ROMEO: But soft, what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
    "HAMLET: To be, or not to be, that is the question.",
    "MACBETH: Tomorrow, and tomorrow, and tomorrow.",
)
TEXT = "\n".join(LINES[i * 7 % 4] for i in range(240)) + "\n"  # ~12k characters
HELD_OUT = "JULIET: But soft, what light? O Romeo, to be, or not to be.\nROMEO: Tomorrow, and tomorrow.\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[charlm.TrainResult, str, str]:
    """A 1x32 char LSTM trained for 40 steps by `charlm.train`, and what the run printed (nothing)."""
    root = tmp_path_factory.mktemp("api")
    corpus = root / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = charlm.train(
            corpus, out=root / "ckpt", hidden_size=32, emb_size=16, num_layers=1, batch_size=4, bptt=32,
            max_steps=40, eval_interval=20, precision="fp32", device="cpu", baselines=False, sample_length=0, seed=3,
        )  # fmt: skip
    return result, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def ckpt(run) -> Path:
    return Path(run[0].out)


@pytest.fixture(scope="module")
def lm(ckpt: Path) -> charlm.LanguageModel:
    return charlm.load(ckpt, device="cpu")


def cli(*args: str) -> dict:
    result = CliRunner().invoke(main, [*map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


# ------------------------------------------------------------------ train and load
def test_train_returns_the_result_and_prints_nothing(run, ckpt, lm):
    result, out, err = run
    assert isinstance(result, charlm.TrainResult)
    assert result.status == "max steps" and result.step == 40 and math.isfinite(result.best_valid_loss)
    assert out == "" and err == ""
    assert lm.kind == "rnn" and lm.level == "char" and lm.path == ckpt
    assert (
        lm.info.train_config["model"]["hidden_size"] == 32
        and lm.tokenizer.vocab_size == lm.info.model_config.vocab_size
    )
    assert lm.device == torch.device("cpu") and "kind='rnn'" in repr(lm)


def test_import_charlm_is_cheap_and_names_its_public_api():
    code = "import charlm, sys; print('torch' in sys.modules, charlm.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False" and out[1] == charlm.__version__
    for name in charlm.__all__:
        assert getattr(charlm, name) is not None, name
    assert issubclass(charlm.CheckpointError, charlm.CharlmError)
    with pytest.raises(AttributeError):
        charlm.no_such_name  # noqa: B018


# ------------------------------------------------------------------ generate and stream
@pytest.mark.parametrize(
    "flags, keywords",
    [
        (["-n", "40", "--seed", "5", "--temperature", "0.9", "--top-k", "12", "-N", "3"],
         dict(max_new_tokens=40, seed=5, temperature=0.9, top_k=12, num_samples=3)),
        (["-n", "60", "--seed", "1", "--top-p", "0.8", "--stop", r"\n"],
         dict(max_new_tokens=60, seed=1, top_p=0.8, stop="\n")),
        (["-n", "30", "--strategy", "greedy", "--seed", "2"], dict(max_new_tokens=30, strategy="greedy", seed=2)),
        (["-n", "12", "-s", "beam", "-b", "4", "--n-best", "2", "--length-penalty", "0.5", "--seed", "0"],
         dict(max_new_tokens=12, strategy="beam", beam_width=4, n_best=2, length_penalty=0.5, seed=0)),
    ],
)  # fmt: skip
def test_generate_equals_the_command_lines_json(ckpt, lm, flags, keywords):
    printed = cli("generate", ckpt, "-p", "ROMEO:", *flags, "--json", "--device", "cpu")
    found = lm.generate("ROMEO:", **keywords)
    assert {"checkpoint": str(ckpt), **found.to_dict()} == printed
    assert [r.text for r in found] == [r["text"] for r in printed["results"]] and found.text == found[0].text
    assert found.seed == keywords["seed"] and found.unknown == () and found.warning is None


def test_a_seed_is_drawn_reported_and_reproduces_the_text(lm):
    first = lm.generate("JULIET:", max_new_tokens=30, temperature=1.5)
    assert isinstance(first.seed, int)
    assert lm.generate("JULIET:", max_new_tokens=30, temperature=1.5, seed=first.seed).text == first.text


def test_a_generator_is_drawn_on_across_calls(lm):
    options = lm.decoding(max_new_tokens=20, temperature=1.2)
    rng = lm.generator(7)
    a, b = lm.generate("", options, seed=rng), lm.generate("", options, seed=rng)
    # each call draws its seed from the generator: a fresh generator seeded alike gives the same first text
    assert a.seed is None and a.text == lm.generate("", options, seed=lm.generator(7)).text and b.text != a.text


def test_stream_pieces_join_to_the_generated_text(lm):
    for keywords in (dict(strategy="greedy"), dict(temperature=0.8, seed=4), dict(seed=4, stop="o")):
        whole = lm.generate("ROMEO:", max_new_tokens=50, **keywords)
        with lm.stream("ROMEO:", max_new_tokens=50, **keywords) as s:
            pieces = list(s)
        assert "".join(pieces) == whole.text and (len(pieces) > 1 or "stop" in keywords)
        assert s.result is not None and s.result.ids == whole[0].ids
        assert s.result.logprob == pytest.approx(whole[0].logprob, abs=1e-6)


def test_a_prompt_outside_the_vocabulary_is_reported_as_data(lm):
    found = lm.generate("ROMEO: ¿qué?", max_new_tokens=5, seed=0)
    assert found.unknown == ("¿", "é") and "'¿'" in found.warning and "<unk>" in found.warning
    assert lm.stream("¿", max_new_tokens=5, seed=0).unknown == ("¿",)
    assert lm.prompt("ROMEO: ¿").unknown == ("¿",)


# ------------------------------------------------------------------ perplexity and score
@pytest.mark.parametrize("exact", [False, True])
def test_perplexity_equals_the_command_lines_figures(lm, ckpt, tmp_path, exact):
    path = tmp_path / "held-out.txt"
    path.write_text(HELD_OUT * 40, encoding="utf-8")
    flags = ["--exact"] if exact else ["--streams", "4"]
    printed = cli("perplexity", ckpt, path, "--json", "--device", "cpu", *flags)["files"][0]
    streams = 1 if exact else 4
    assert {"path": str(path), **lm.perplexity(path, exact=exact, streams=streams).to_dict()} == printed
    from_text = lm.perplexity(text=HELD_OUT * 40, exact=exact, streams=streams)
    assert from_text.tokens == printed["tokens"] and from_text.nll == pytest.approx(printed["nll"], rel=1e-12)


def test_score_sums_its_tokens_and_agrees_with_perplexity(lm):
    s = lm.score(HELD_OUT)
    assert len(s.tokens) == len(s.ids) == len(s.logprobs) == len(HELD_OUT)
    assert "".join(s.tokens) == HELD_OUT
    assert s.logprob == pytest.approx(sum(s.logprobs), abs=1e-9) and all(lp <= 0 for lp in s.logprobs)
    exact = lm.perplexity(text=HELD_OUT, exact=True)
    assert -s.logprob == pytest.approx(exact.nll, rel=1e-6) and s.perplexity == pytest.approx(exact.perplexity)
    assert s.mean == pytest.approx(s.logprob / len(s.ids))
    texts = lm.score([HELD_OUT, "ROMEO:"])
    assert [t.logprob for t in texts] == [s.logprob, lm.score("ROMEO:").logprob]
    assert lm.score("").logprobs == () and math.isnan(lm.score("").mean)


def test_score_matches_the_log_probabilities_of_decoding_step_by_step(lm):
    """Greedy decoding steps the model one token at a time and sums the log-probabilities of what it picks;
    scoring that text reads it in one forward pass: the two must agree."""
    for prompt in ("", "ROMEO:"):
        [gen] = lm.generate(prompt, strategy="greedy", max_new_tokens=60)
        scored = lm.score(prompt + gen.text)
        assert scored.ids[len(scored.ids) - len(gen.ids) :] == tuple(gen.ids)
        assert math.fsum(scored.logprobs[-len(gen.ids) :]) == pytest.approx(gen.logprob, abs=1e-3)


def test_scores_of_unknown_characters_name_them(lm):
    s = lm.score("ROMEO: ¿qué?")
    assert s.unknown == ("¿", "é") and s.tokens.count("<unk>") == 2 and math.isfinite(s.logprob)


# ------------------------------------------------------------------ Kneser-Ney checkpoints
def test_a_kneser_ney_checkpoint_loads_generates_and_scores():
    kn = charlm.load(V1 / "kn", device="cpu")
    assert kn.kind == "kn" and kn.level == "word"
    printed = cli("generate", V1 / "kn", "-p", "the", "-n", "12", "--seed", "1", "--json", "--device", "cpu")
    assert {"checkpoint": str(V1 / "kn"), **kn.generate("the", max_new_tokens=12, seed=1).to_dict()} == printed
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    s = kn.score(text)
    assert s.tokens[-1] == "<eos>" and -s.logprob == pytest.approx(kn.perplexity(text=text).nll, rel=1e-9)
    assert (
        "".join(kn.stream("the", strategy="greedy", max_new_tokens=8))
        == kn.generate("the", strategy="greedy", max_new_tokens=8).text
    )


# ------------------------------------------------------------------ bad input
def one_line(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


def test_bad_input_raises_one_line_charlm_errors(lm, tmp_path):
    cases = [
        (lambda: charlm.load(tmp_path / "nope"), charlm.CheckpointError, "does not exist"),
        (lambda: charlm.load(tmp_path), charlm.CheckpointError, "not a charlm checkpoint"),
        (lambda: charlm.load(V1 / "char", which="middle"), charlm.ConfigError, "best"),
        (lambda: charlm.load(V1 / "char", device="tpu9"), charlm.ConfigError, "device"),
        (lambda: lm.generate("a", top_k=10_000), charlm.ConfigError, "above the vocabulary"),
        (lambda: lm.generate("a", temprature=0.5), charlm.ConfigError, "did you mean temperature"),
        (lambda: lm.generate("a", seed=-1), charlm.ConfigError, "seed must be between"),
        (lambda: lm.generate("a", strategy="greedy", num_samples=2), charlm.ConfigError, "needs sampling"),
        (lambda: lm.generate("a", stop=""), charlm.ConfigError, "stop"),
        (lambda: lm.generate(5), charlm.ConfigError, "string"),
        (lambda: lm.stream("a", strategy="beam"), charlm.ConfigError, "cannot stream"),
        (lambda: lm.perplexity(), charlm.ConfigError, "one of the two"),
        (lambda: lm.perplexity(tmp_path / "missing.txt"), charlm.CorpusError, "missing.txt"),
        (lambda: lm.perplexity(text=""), charlm.CorpusError, "no tokens"),
        (lambda: lm.perplexity(text="abc", streams=0), charlm.ConfigError, "streams"),
        (lambda: lm.score(3), charlm.ConfigError, "string"),
        (lambda: charlm.train(tmp_path / "none.txt", hiden_size=8), charlm.ConfigError, "did you mean hidden_size"),
        (lambda: charlm.train(tmp_path / "none.txt", out=tmp_path / "r", max_steps=1), charlm.CorpusError, "none.txt"),
    ]
    for call, error, words in cases:
        with pytest.raises(error) as exc_info:
            call()
        assert words in one_line(exc_info), (words, str(exc_info.value))
