"""Decoding controls: each filter on a worked example, their options, and that they reach the loops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import charlm
from charlm.cli import main
from charlm.errors import ConfigError
from charlm.sampling import (
    DecodingOptions,
    banned_sequences_filter,
    min_new_tokens_filter,
    min_p_filter,
    no_repeat_ngram_filter,
    presence_frequency_filter,
    repetition_penalty_filter,
    token_counts,
    typical_p_filter,
)

INF = float("inf")


def test_token_counts() -> None:
    history = torch.tensor([[0, 2, 2], [1, 1, 1]])
    assert token_counts(history, 4).tolist() == [[1, 0, 2, 0], [0, 3, 0, 0]]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_ids() -> None:
    logits = torch.tensor([[2.0, -1.0, 3.0, -2.0]])
    counts = token_counts(torch.tensor([[0, 1]]), 4)  # ids 0 and 1 were emitted
    out = repetition_penalty_filter(logits, counts, 2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0, -2.0]]
    assert logits.tolist() == [[2.0, -1.0, 3.0, -2.0]]  # pure: the input is untouched


def test_presence_and_frequency_penalties() -> None:
    logits = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    counts = token_counts(torch.tensor([[0, 0, 1], [2, 2, 2]]), 3)  # row 0: id 0 twice, id 1 once; row 1: id 2 x3
    out = presence_frequency_filter(logits, counts, presence=0.5, frequency=0.25)
    assert out.tolist() == [[1.0 - 0.5 - 0.5, 1.0 - 0.5 - 0.25, 1.0], [0.0, 0.0, -0.5 - 0.75]]


def test_no_repeat_ngram_bans_the_id_that_would_repeat_an_ngram() -> None:
    logits = torch.zeros(2, 5)
    history = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 0, 1]])
    out = no_repeat_ngram_filter(logits, history, 3)
    # row 0 ends "1 2"; "1 2 3" was emitted: 3 is banned. Row 1 ends "0 1": never seen before, nothing banned.
    assert out.tolist() == [[0, 0, 0, -INF, 0], [0, 0, 0, 0, 0]]
    assert no_repeat_ngram_filter(logits, history, 1).tolist()[1] == [-INF, -INF, 0, 0, -INF]  # unigrams: any seen
    assert no_repeat_ngram_filter(logits, history[:, :2], 3) is logits  # too short to hold an n-gram


def test_no_repeat_ngram_counts_overlapping_windows() -> None:
    out = no_repeat_ngram_filter(torch.zeros(1, 3), torch.tensor([[0, 0, 0]]), 2)
    assert out.tolist() == [[-INF, 0, 0]]  # "0 0" was seen: after 0 comes no 0


def test_min_p_keeps_tokens_with_probability_at_least_min_p_times_the_top() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = min_p_filter(probs.log(), 0.3)  # threshold 0.15: 0.15 stays, 0.05 goes
    assert torch.isfinite(out).tolist() == [[True, True, True, False]]
    assert torch.isfinite(min_p_filter(probs.log(), 1.0)).tolist() == [[True, False, False, False]]


def test_typical_p_keeps_the_tokens_closest_to_the_entropy() -> None:
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    entropy = -(probs * probs.log()).sum()  # 1.2799 nats
    # |-log p - H|: 0.4 -> 0.363, 0.3 -> 0.076, 0.2 -> 0.329, 0.1 -> 1.023; ranked 0.3, 0.2, 0.4, 0.1
    assert math.isclose(float(entropy), 1.2799, abs_tol=1e-4)
    out = typical_p_filter(probs.log(), 0.45)  # 0.3 (cum 0.3), then 0.2 (cum 0.5) reaches the mass
    assert torch.isfinite(out).tolist() == [[False, True, True, False]]
    out = typical_p_filter(probs.log(), 0.2)  # the closest alone
    assert torch.isfinite(out).tolist() == [[False, True, False, False]]
    assert torch.isfinite(typical_p_filter(probs.log(), 1.0)).all()


def test_min_new_tokens_masks_the_ending_ids_until_enough_are_out() -> None:
    logits = torch.zeros(1, 4)
    assert min_new_tokens_filter(logits, 2, 3, (0, 3)).tolist() == [[-INF, 0, 0, -INF]]
    assert min_new_tokens_filter(logits, 3, 3, (0, 3)) is logits


def test_banned_sequences_ban_the_id_that_would_complete_one() -> None:
    logits = torch.zeros(2, 5)
    history = torch.tensor([[3, 1, 2], [0, 0, 4]])
    groups = [torch.tensor([[1, 2, 3], [2, 4, 0], [0, 4, 1]]), torch.tensor([[4]])]  # three of length 3, one of 1
    out = banned_sequences_filter(logits, history, groups)
    # row 0 ends "1 2": 3 completes "1 2 3". Row 1 ends "0 4": 1 completes "0 4 1". 4 is banned everywhere.
    assert out.tolist() == [[0, 0, 0, -INF, -INF], [0, -INF, 0, 0, -INF]]
    assert banned_sequences_filter(logits, history[:, :1], groups[:1]) is logits  # too short to end in a prefix


@pytest.mark.parametrize(
    "changes",
    [
        {"repetition_penalty": 0.0},
        {"presence_penalty": 3.0},
        {"frequency_penalty": float("nan")},
        {"no_repeat_ngram_size": 0},
        {"min_p": 1.5},
        {"typical_p": 0.0},
        {"typical_p": 0.9, "strategy": "greedy"},
        {"min_p": 0.1, "strategy": "beam"},
        {"min_p": 0.1, "temperature": 0.0},
        {"min_new_tokens": -1},
        {"min_new_tokens": 20, "max_new_tokens": 10},
        {"ban": ("",)},
    ],
)
def test_bad_controls_are_one_line_errors(changes: dict) -> None:
    with pytest.raises(ConfigError) as e:
        DecodingOptions(**changes)
    assert "\n" not in str(e.value)


def test_controls_are_off_by_default() -> None:
    assert not DecodingOptions().history_filters
    assert DecodingOptions(min_new_tokens=1).history_filters


# ------------------------------------------------------------------ through the library and the loops
CHAR = Path(__file__).parent / "fixtures" / "v1" / "char"


@pytest.fixture(scope="module")
def lm() -> charlm.LanguageModel:
    return charlm.load(CHAR, device="cpu")


def _ngrams(ids: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_no_repeat_ngram_holds_in_every_strategy(lm: charlm.LanguageModel, strategy: str) -> None:
    plain = lm.generate("ab", strategy=strategy, max_new_tokens=60, seed=0)[0]
    assert strategy == "sample" or len(set(_ngrams(plain.ids, 3))) < len(_ngrams(plain.ids, 3))  # it loops
    for found in lm.generate("ab", strategy=strategy, max_new_tokens=60, seed=0, no_repeat_ngram_size=3):
        grams = _ngrams(found.ids, 3)
        assert len(set(grams)) == len(grams)


def test_min_new_tokens_keeps_the_line_limit_from_ending_the_text_early(lm: charlm.LanguageModel) -> None:
    newline = lm.tokenizer.encode("\n")[0]
    for found in lm.generate("ab", max_new_tokens=40, seed=0, lines=1, min_new_tokens=30, num_samples=8):
        assert newline not in found.ids[:30]
        assert found.num_tokens >= 30


def test_repetition_penalty_breaks_a_greedy_loop(lm: charlm.LanguageModel) -> None:
    plain = lm.generate("ab", strategy="greedy", max_new_tokens=40, seed=0)[0]
    penalised = lm.generate("ab", strategy="greedy", max_new_tokens=40, seed=0, repetition_penalty=1.5)[0]
    assert len(set(penalised.ids)) > len(set(plain.ids))


def test_controls_off_give_the_same_text_and_on_they_give_valid_samples(lm: charlm.LanguageModel) -> None:
    plain = lm.generate("ab", max_new_tokens=50, seed=3, num_samples=4)
    neutral = lm.generate("ab", max_new_tokens=50, seed=3, num_samples=4, repetition_penalty=1.0, min_new_tokens=0)
    assert [g.ids for g in plain] == [g.ids for g in neutral]
    shaped = lm.generate("ab", max_new_tokens=50, seed=3, num_samples=4, min_p=0.1, typical_p=0.9, presence_penalty=0.5)
    assert all(g.num_tokens == 50 for g in shaped)


# ------------------------------------------------------------------ the command line and the REPL
def _generate(*args: str, input: str | None = None):
    return CliRunner().invoke(main, ["generate", str(CHAR), *args], input=input)


def test_cli_flags_reach_the_options(lm: charlm.LanguageModel) -> None:
    flags = ["-p", "ab", "-n", "40", "--seed", "2", "--json", "--no-repeat-ngram-size", "3"]
    flags += ["--repetition-penalty", "1.3", "--presence-penalty", "0.2", "--frequency-penalty", "0.1"]
    flags += ["--min-p", "0.05", "--typical-p", "0.95", "--min-new-tokens", "10"]
    result = _generate(*flags)
    assert result.exit_code == 0, result.output
    options = json.loads(result.stdout)["options"]
    assert options["no_repeat_ngram_size"] == 3 and options["repetition_penalty"] == 1.3
    assert options["min_p"] == 0.05 and options["typical_p"] == 0.95 and options["min_new_tokens"] == 10
    expected = lm.generate(
        "ab",
        max_new_tokens=40,
        seed=2,
        no_repeat_ngram_size=3,
        repetition_penalty=1.3,
        presence_penalty=0.2,
        frequency_penalty=0.1,
        min_p=0.05,
        typical_p=0.95,
        min_new_tokens=10,
    )
    assert json.loads(result.stdout)["results"][0]["text"] == expected[0].text


def test_cli_contradictory_controls_are_one_line(lm: charlm.LanguageModel) -> None:
    result = _generate("-s", "greedy", "--typical-p", "0.9")
    assert result.exit_code == 1
    assert "typical-p shapes sampling" in result.output and len(result.output.strip().splitlines()) == 1
    result = _generate("-n", "5", "--min-new-tokens", "9")
    assert result.exit_code == 1 and "min-new-tokens 9 is above --length 5" in result.output


def test_repl_sets_the_controls() -> None:
    commands = ["/no-repeat-ngram 3", "/repetition-penalty 1.2", "/min-p 0.1", "/min-p off", "/min-new-tokens 4"]
    result = _generate("-i", "-n", "5", "--seed", "1", input="\n".join(commands) + "\nab\n")
    assert result.exit_code == 0, result.output
    settings = [line for line in result.stderr.splitlines() if line.startswith("strategy ")]
    assert "no-repeat-ngram 3" in settings[1]
    assert "repetition-penalty 1.2" in settings[2]
    assert "min-p 0.1" in settings[3] and "min-p off" in settings[4]
    assert "min-new-tokens 4" in settings[5]


def test_a_users_logits_processor_sees_the_history_and_shapes_every_strategy(lm: charlm.LanguageModel) -> None:
    vowels = [lm.tokenizer.encode(c)[0] for c in "aeiou"]
    seen: list[tuple[int, ...]] = []

    def no_vowels(logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(history.shape))
        out = logits.clone()
        out[:, vowels] = float("-inf")
        return out

    for strategy in ("sample", "greedy", "beam"):
        seen.clear()
        found = lm.generate("ab", strategy=strategy, max_new_tokens=30, seed=1, logits_processors=[no_vowels])
        assert not set(found[0].ids) & set(vowels)
        assert seen[0][1] == 0 and seen[-1][1] > 0  # the ids generated so far, one more each step
    assert found.to_dict()["options"]["logits_processors"] == ["no_vowels"]
    with pytest.raises(ConfigError):
        lm.generate("ab", logits_processors=["not a function"])


def test_banned_strings_never_appear_across_tokens(lm: charlm.LanguageModel) -> None:
    plain = lm.generate("ab", max_new_tokens=200, seed=4, num_samples=8)
    common = ["e ", " t", "he"]
    assert all(any(c in g.text for g in plain) for c in common)  # the char model writes them unbanned
    for strategy, n in (("sample", 8), ("greedy", 1), ("beam", 1)):
        found = lm.generate("ab", strategy=strategy, max_new_tokens=200, seed=4, num_samples=n, ban=common)
        assert all(c not in g.text for g in found for c in common)
    assert lm.decoding(ban="x").ban == ("x",)


def test_cli_and_repl_ban(lm: charlm.LanguageModel) -> None:
    result = _generate("-p", "ab", "-n", "100", "--seed", "1", "--json", "--ban", "e ", "--ban", "\\n")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["options"]["ban"] == ["e ", "\n"] and "e " not in data["results"][0]["text"]
    assert "\n" not in data["results"][0]["text"]
    result = _generate("-i", "-n", "5", input="/ban e \n/ban th\n/ban off\n")
    settings = [line for line in result.stderr.splitlines() if line.startswith("strategy ")]
    assert "ban 'e', 'th'" in settings[2] and "ban" not in settings[3]


@pytest.mark.parametrize("strategy", ["sample", "greedy", "beam"])
def test_a_row_left_with_no_token_draws_from_before_the_controls(lm: charlm.LanguageModel, strategy: str) -> None:
    # 58 generatable characters: a unigram ban runs out of tokens at step 59
    found = lm.generate("ab", strategy=strategy, max_new_tokens=100, seed=0, no_repeat_ngram_size=1)
    assert found[0].num_tokens == 100 and lm.tokenizer.unk_id not in found[0].ids
    assert len(set(found[0].ids[:58])) == 58


def test_beam_honours_min_new_tokens_before_a_stop_string(lm: charlm.LanguageModel) -> None:
    short = lm.generate("ab", strategy="beam", max_new_tokens=60, stop="e")
    assert max(g.num_tokens for g in short) < 20  # without it, every hypothesis meets an "e" early
    for g in lm.generate("ab", strategy="beam", max_new_tokens=60, stop="e", min_new_tokens=20):
        assert g.num_tokens > 20 and "e" not in g.text
