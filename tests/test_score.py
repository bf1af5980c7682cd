"""Scoring lines: `charlm.evaluation.score_lines` (batched), `LanguageModel.score` and `charlm score`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import charlm
from charlm.cli import main
from charlm.data import normalise_newlines
from charlm.evaluation import context_id, score_lines, stream_logprobs

V1 = Path(__file__).parent / "fixtures" / "v1"
LINES = [
    "First Citizen:",
    "Before we proceed any further, hear me speak.",
    "All:",
    "Speak, speak.",
    "You are all resolved rather to die than to famish?",
    "x",
]


@pytest.fixture(scope="module", params=["char", "kn", "word-adaptive"])
def lm(request: pytest.FixtureRequest) -> charlm.LanguageModel:
    return charlm.load(V1 / request.param, device="cpu")


def alone(lm: charlm.LanguageModel, text: str) -> list[float]:
    """The reference: one text as one exact stream, the context id then its ids, from the zero state."""
    ids = lm.tokenizer.encode(normalise_newlines(text))
    stream = torch.tensor([context_id(lm.tokenizer), *ids], dtype=torch.long)
    return stream_logprobs(lm.model, stream, streams=1)[0].tolist()


def test_batched_scores_equal_each_text_scored_alone(lm):
    scores = lm.score(LINES)
    assert [s.text for s in scores] == LINES
    for s, text in zip(scores, LINES):
        assert s.logprobs == pytest.approx(alone(lm, text), abs=1e-5)
        assert s.logprob == pytest.approx(math.fsum(s.logprobs))
        assert s.mean == pytest.approx(s.logprob / len(s.ids))
        assert s.perplexity == pytest.approx(math.exp(-s.mean))
    single = lm.score(LINES[1])
    assert single.logprobs == pytest.approx(scores[1].logprobs, abs=1e-5)


def test_the_batch_size_does_not_change_the_figures(lm):
    ids = [lm.tokenizer.encode(t) for t in LINES]
    context = context_id(lm.tokenizer)
    wide = score_lines(lm.model, ids, context)
    for rows, window in ((1, 256), (2, 3), (4, 1)):
        narrow = score_lines(lm.model, ids, context, rows=rows, window=window)
        for a, b in zip(wide, narrow):
            assert a.tolist() == pytest.approx(b.tolist(), abs=1e-5)


def test_empty_texts_score_no_tokens_in_place(lm):
    scores = lm.score(["", LINES[0], ""])
    assert [len(s.logprobs) for s in scores][::2] == [0, 0]
    assert scores[1].logprobs == pytest.approx(alone(lm, LINES[0]), abs=1e-5)


def test_scores_equal_a_token_by_token_computation_with_step():
    lm = charlm.load(V1 / "char", device="cpu")
    text = "Speak, speak."
    ids = lm.tokenizer.encode(text)
    token, state, expected = context_id(lm.tokenizer), None, []
    with torch.no_grad():
        for i in ids:
            logits, state = lm.model.step(torch.tensor([token]), state)  # (1, V)
            expected.append(torch.log_softmax(logits.double(), dim=-1)[0, i].item())
            token = i
    assert lm.score([text, "All:"])[0].logprobs == pytest.approx(expected, abs=1e-4)


def run(*args: str, stdin: str | bytes | None = None):
    return CliRunner().invoke(main, ["score", *args], input=stdin)


def test_json_lines_in_input_order_from_stdin_with_empty_lines_skipped():
    result = run(str(V1 / "char"), "--json", stdin="First Citizen:\n\nAll:\r\nSpeak, speak.")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 3, 4]
    assert [r["text"] for r in records] == ["First Citizen:", "All:", "Speak, speak."]
    lm = charlm.load(V1 / "char", device="cpu")
    for r in records:
        expected = alone(lm, r["text"])
        assert r["tokens"] == len(expected)
        assert r["logprob"] == pytest.approx(math.fsum(expected), abs=1e-4)
        assert r["mean"] == pytest.approx(r["logprob"] / r["tokens"])
    assert "skipped 1 empty line" in result.stderr


@pytest.mark.parametrize("fixture", ["char", "kn"])
def test_sort_ranks_by_mean_log_probability(fixture, tmp_path):
    path = tmp_path / "candidates.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    result = run(str(V1 / fixture), str(path), "--json", "--sort")
    assert result.exit_code == 0, result.output
    means = [json.loads(line)["mean"] for line in result.stdout.splitlines()]
    assert len(means) == len(LINES) and means == sorted(means, reverse=True)
    table = run(str(V1 / fixture), str(path), "--sort")
    assert table.exit_code == 0 and "rank" in table.stdout
    assert "mean log-probability" in run("--help").stdout


def test_unseen_characters_are_warned_about():
    result = run(str(V1 / "char"), "-", stdin="All: \u00e9\u00e9\n")
    assert result.exit_code == 0, result.output
    assert "warning: 1 line has 1 character outside the vocabulary ('\u00e9'); read as <unk>" in result.stderr


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p / "missing.txt", "cannot read"),
        (lambda p: (p / "bin").write_bytes(b"ab\x00cd") and p / "bin", "looks binary"),
        (lambda p: (p / "latin").write_bytes(b"caf\xe9\n") and p / "latin", "not valid UTF-8"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(make, expected, tmp_path):
    result = run(str(V1 / "char"), str(make(tmp_path)))
    assert result.exit_code == 1
    assert expected in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_checkpoint_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "ckpt").mkdir()
    result = run(str(tmp_path / "ckpt"), "-", stdin="All:\n")
    assert result.exit_code == 1 and "checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
