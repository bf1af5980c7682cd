"""`charlm generate --prompts` and the library's `generate_many`: many prompts as one batch, each the text it
gets alone; per-prompt options; bad lines named before anything is decoded; per-token log-probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import charlm
from charlm.cli import main
from charlm.errors import ConfigError

CHAR = Path(__file__).parent / "fixtures" / "v1" / "char"


@pytest.fixture(scope="module")
def lm() -> charlm.LanguageModel:
    return charlm.load(CHAR, device="cpu")


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, ["generate", str(CHAR), *args], input=input)


def lines_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def alone(*args: str) -> list[dict]:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return same(json.loads(result.stdout)["results"])


def same(results: list[dict]) -> list[dict]:
    """Results to compare: the text and tokens exactly; the log-probability to 6 figures (a batch's matrix
    product may round the last bits of a logit differently from one row's)."""
    return [r | {"logprob": round(r["logprob"], 4)} for r in results]


def test_each_prompt_gets_the_text_it_gets_alone_in_input_order(tmp_path: Path) -> None:
    f = tmp_path / "prompts.txt"
    prompts = ["ROMEO:", "a", "JULIET: O Romeo, Romeo, wherefore art thou", "the", "  spaced  ", "x" * 3]
    f.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    result = run("--prompts", str(f), "--length", "30", "--seed", "10", "--temperature", "0.9")
    assert result.exit_code == 0, result.output
    out = lines_of(result.stdout)
    assert [o["line"] for o in out] == list(range(1, 7)) and [o["prompt"] for o in out] == prompts
    for i, (o, p) in enumerate(zip(out, prompts)):
        assert o["seed"] == 10 + i
        assert same(o["results"]) == alone("-p", p, "--length", "30", "--seed", str(10 + i), "--temperature", "0.9")
    assert "6 prompts, 180 tokens" in result.stderr


def test_json_lines_carry_their_own_options_seed_and_id(tmp_path: Path) -> None:
    rows = [
        {"prompt": "ROMEO:", "temperature": 0.5, "length": 20, "id": "r", "seed": 99},
        {"prompt": "a", "strategy": "beam", "beam-width": 3, "length": 15},
        {"prompt": "b", "num_samples": 2, "top_p": 0.9, "max_new_tokens": 12, "stop": ["e"]},
        {"prompt": "c", "strategy": "greedy", "logprobs": 2, "length": 8},
    ]
    text = "\n".join(json.dumps(r) for r in rows)
    result = run("--prompts", "-", "--seed", "5", "--length", "40", input=text)  # standard input
    assert result.exit_code == 0, result.output
    out = lines_of(result.stdout)
    assert out[0]["id"] == "r" and out[0]["seed"] == 99 and "id" not in out[1]
    assert same(out[0]["results"]) == alone("-p", "ROMEO:", "--temperature", "0.5", "-n", "20", "--seed", "99")
    assert out[1]["strategy"] == "beam" and len(out[1]["results"]) == 3
    assert same(out[1]["results"]) == alone("-p", "a", "-s", "beam", "-b", "3", "-n", "15", "--seed", "6")
    assert same(out[2]["results"]) == alone(
        "-p", "b", "-N", "2", "--top-p", "0.9", "-n", "12", "--stop", "e", "--seed", "7"
    )
    assert all("e" not in r["text"] for r in out[2]["results"])
    tokens = out[3]["results"][0]["logprobs"]
    assert len(tokens) == 8 and all(len(t["top"]) == 2 for t in tokens)
    assert all(t["token"] == t["top"][0]["token"] for t in tokens)  # greedy picks the most likely token
    assert "".join(t["token"] for t in tokens) == out[3]["results"][0]["text"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "line 2: the prompt is empty"),
        ('{"prompt": "x", "temprature": 1}', "line 2: unknown decoding option 'temprature'; did you mean temperature?"),
        ("{bad json", "line 2: invalid JSON"),
        ('{"prompt": "x", "top_p": 2}', "line 2: top-p must be in (0, 1]"),
        ('{"prompt": "x", "seed": -1}', "line 2: seed must be between 0"),
        ('{"prompt": 5}', "line 2: each prompt needs a 'prompt' string"),
        ('{"temperature": 1}', "line 2: each prompt needs a 'prompt' string"),
        ('{"prompt": "x", "strategy": "greedy", "min_p": 0.1}', "line 2: min-p shapes sampling"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_decoded(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "p.txt"
    f.write_text(f"ROMEO:\n{line}\nthe\n", encoding="utf-8")
    result = run("--prompts", str(f), "--length", "10")
    assert result.exit_code == 1 and result.stdout == ""
    assert f"{f} {message}" in result.stderr and "--skip-bad" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_skip_bad_writes_an_error_object_in_the_bad_lines_place(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text('ROMEO:\n\n{"prompt": "x", "temprature": 1}\nthe\n', encoding="utf-8")
    result = run("--prompts", str(f), "--length", "10", "--skip-bad", "--seed", "0")
    assert result.exit_code == 0, result.output
    out = lines_of(result.stdout)
    assert [o["line"] for o in out] == [1, 2, 3, 4]
    assert "error" in out[1] and "temprature" in out[2]["error"] and out[3]["prompt"] == "the"
    assert result.stderr.count("skipped") == 2


def test_an_unseen_character_is_warned_about_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("ROMEO:\nthe ☃ snowman\n", encoding="utf-8")
    result = run("--prompts", str(f), "--length", "5")
    assert result.exit_code == 0 and "line 2: the prompt has 1 character outside the vocabulary" in result.stderr


def test_prompts_does_not_combine_with_a_single_prompt(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("a\n", encoding="utf-8")
    result = run("--prompts", str(f), "-p", "b")
    assert result.exit_code == 1 and "--prompts does not combine" in result.stderr
    assert "add --json" in run("-p", "a", "--logprobs", "2").stderr


def test_library_generate_many_in_order_with_seeds(lm: charlm.LanguageModel) -> None:
    found = list(lm.generate_many(["ROMEO:", {"prompt": "a", "temperature": 0.3}], max_new_tokens=25, seed=8))
    assert [c.seed for c in found] == [8, 9]
    assert found[0].text == lm.generate("ROMEO:", max_new_tokens=25, seed=8).text
    assert found[1].text == lm.generate("a", max_new_tokens=25, temperature=0.3, seed=9).text
    with pytest.raises(ConfigError, match="empty"):
        list(lm.generate_many(["a", ""]))


def test_library_logprobs_leave_the_text_unchanged(lm: charlm.LanguageModel) -> None:
    plain = lm.generate("ROMEO:", max_new_tokens=30, num_samples=2, seed=3)
    detailed = lm.generate("ROMEO:", max_new_tokens=30, num_samples=2, seed=3, logprobs=4)
    assert [g.text for g in plain] == [g.text for g in detailed] and detailed.seed == 3
    for g in detailed:
        assert len(g.tokens) == 30 and sum(t.logprob for t in g.tokens) == pytest.approx(g.logprob)
    with pytest.raises(ConfigError, match="beam"):
        lm.generate("a", strategy="beam", logprobs=2)
