"""Continuous batching (`DecodeBatch`, `run_batch`) and the per-row random streams it rests on: every row's
text is the text of decoding its prompt alone with the same seed, whatever shares the batch and whenever it
joined."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import charlm
import charlm.sampling.batch as batch_module
from charlm.errors import ConfigError
from charlm.sampling import DecodeBatch, DecodingOptions, RowRandom, run_batch, sample_next, uniforms
from charlm.sampling.rng import row_key

V1 = Path(__file__).parent / "fixtures" / "v1"


@pytest.fixture(scope="module")
def lm() -> charlm.LanguageModel:
    return charlm.load(V1 / "char", device="cpu")


@pytest.fixture(scope="module")
def word_lm() -> charlm.LanguageModel:
    return charlm.load(V1 / "word-adaptive", device="cpu")


def alone(lm: charlm.LanguageModel, prompt: str, options: DecodingOptions, seed: int, n: int = 1) -> list[str]:
    return [g.text for g in charlm.sampling.generate(lm.model, lm.tokenizer, prompt, options, seed)][:n]


# ------------------------------------------------------------------ the random streams
def test_a_rows_draws_depend_on_its_key_and_count_only() -> None:
    keys = torch.tensor([row_key(5, 0), row_key(5, 1), row_key(9, 0)])
    whole = uniforms(keys, torch.arange(10)[None, :])  # (3, 10)
    assert torch.equal(uniforms(keys[1:2], torch.arange(10)[None, :]), whole[1:2])  # alone = in a batch
    assert torch.equal(uniforms(keys, torch.tensor([3, 0, 7])), whole[[0, 1, 2], [3, 0, 7]])  # own counters
    assert len(set(whole.flatten().tolist())) == 30  # distinct streams and steps
    r = RowRandom(keys)
    assert torch.equal(torch.stack([r.next() for _ in range(70)], 1)[:, :10], whole)  # across blocks
    assert ((whole >= 0) & (whole < 1)).all()


def test_uniforms_are_uniform() -> None:
    u = RowRandom.seeded(3, rows=4)
    draws = torch.stack([u.next() for _ in range(5000)], 1).flatten()
    counts = torch.histc(draws.float(), bins=10, min=0, max=1)
    assert (counts - 2000).abs().max() < 200  # 10 bins of 2,000 expected: chi-square scale deviation
    assert abs(float(draws.mean()) - 0.5) < 0.01


def test_inverse_cdf_draw_worked_example() -> None:
    logits = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log().expand(5, -1)
    u = torch.tensor([0.0, 0.09, 0.11, 0.59, 0.999], dtype=torch.float64)
    # cumulative: 0.1, 0.3, 0.6, 1.0 -> the first id whose cumulative probability passes u
    assert sample_next(logits, u).tolist() == [0, 0, 1, 2, 3]
    banned = torch.tensor([[0.0, float("-inf"), 0.0, float("-inf")]])  # two ids of probability 0
    assert sample_next(banned.expand(3, -1), torch.tensor([0.0, 0.5, 0.99])).tolist() == [0, 2, 2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-4, 4), min_size=2, max_size=9), st.floats(0, 0.999999))
def test_an_id_of_probability_zero_is_never_drawn(values: list[float], u: float) -> None:
    logits = torch.tensor([values])
    logits[0, 0] = float("-inf")
    assert int(sample_next(logits, torch.tensor([u], dtype=torch.float64))[0]) != 0


# ------------------------------------------------------------------ batched = alone
MIXED = [
    ("ROMEO:", DecodingOptions(max_new_tokens=40, temperature=0.9)),
    ("a", DecodingOptions(max_new_tokens=25, top_p=0.9)),
    ("JULIET: O Romeo, Romeo", DecodingOptions(max_new_tokens=30, strategy="greedy")),
    ("the", DecodingOptions(max_new_tokens=50, stop=("e ",))),
    ("", DecodingOptions(max_new_tokens=35, repetition_penalty=1.3, no_repeat_ngram_size=3)),
    ("ab", DecodingOptions(max_new_tokens=30, min_new_tokens=20, lines=1, ban=("th",), top_k=5)),
    ("ROMEO:", DecodingOptions(max_new_tokens=40, temperature=0.9)),  # same options as the first: one group
]


def test_a_batch_of_mixed_prompts_gives_each_prompts_text_alone(lm: charlm.LanguageModel) -> None:
    requests = [(p, o, 100 + i) for i, (p, o) in enumerate(MIXED)]
    batched = run_batch(lm.model, lm.tokenizer, requests)
    for (prompt, options, seed), got in zip(requests, batched):
        [want] = charlm.sampling.generate(lm.model, lm.tokenizer, prompt, options, seed)
        assert (got.text, got.ids, got.finish_reason) == (want.text, want.ids, want.finish_reason)
        assert got.logprob == pytest.approx(want.logprob, rel=1e-5)
    assert batched[0].text != batched[-1].text  # same prompt and options, other seed
    assert all("th" not in g.text for g in batched[5:6]) and len(batched[5].ids) >= 20


def test_a_small_batch_limit_gives_the_same_texts(lm: charlm.LanguageModel) -> None:
    requests = [(p, o, 7 + i) for i, (p, o) in enumerate(MIXED)]
    assert [g.text for g in run_batch(lm.model, lm.tokenizer, requests, max_rows=2)] == [
        g.text for g in run_batch(lm.model, lm.tokenizer, requests)
    ]


def test_prompts_read_in_packed_chunks_or_alone_give_the_same_texts(
    lm: charlm.LanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [(p, o, 30 + i) for i, (p, o) in enumerate(MIXED)]
    whole = [g.text for g in run_batch(lm.model, lm.tokenizer, requests)]  # one packed read
    width = lm.model.state_floats
    # a budget that fits two short prompts at once but not the longest (23 ids): chunks, then one read alone
    monkeypatch.setattr(batch_module, "LOGIT_BUDGET", 2 * (10 * width + lm.tokenizer.vocab_size))
    alone_reads, packed = [], []
    real_warm, real_many = batch_module.warm_up, type(lm.model).read_many
    monkeypatch.setattr(batch_module, "warm_up", lambda m, ids: alone_reads.append(ids) or real_warm(m, ids))
    monkeypatch.setattr(type(lm.model), "read_many", lambda m, ps: packed.append(len(ps)) or real_many(m, ps))
    assert [g.text for g in run_batch(lm.model, lm.tokenizer, requests)] == whole
    assert [len(ids) for ids in alone_reads] == [23] and sum(packed) == 6 and len(packed) > 1


def test_a_row_that_joins_a_running_batch_gets_its_text_alone(lm: charlm.LanguageModel) -> None:
    batch = DecodeBatch(lm.model, lm.tokenizer)
    long = DecodingOptions(max_new_tokens=60, temperature=0.8, presence_penalty=0.5)
    first = batch.add("ROMEO:", long, seed=1)
    texts: dict[int, str] = {first: ""}
    results = {}
    late = None
    for step in range(200):
        if step == 9:  # two rows join the running one, one of them with the same options (same group)
            late = batch.add("JULIET:", long, seed=2)
            other = batch.add("a", DecodingOptions(max_new_tokens=20, top_k=3), seed=3)
            texts[late] = texts[other] = ""
        for event in batch.step():
            texts[event.row] += event.piece
            if event.done:
                results[event.row] = event.result
        if not len(batch):
            break
    assert late is not None and set(results) == {first, late, other}
    assert texts[first] == results[first].text == alone(lm, "ROMEO:", long, 1)[0]
    assert texts[late] == results[late].text == alone(lm, "JULIET:", long, 2)[0]
    assert results[other].text == alone(lm, "a", DecodingOptions(max_new_tokens=20, top_k=3), 3)[0]


def test_sample_i_of_a_seed_is_the_ith_of_num_samples(lm: charlm.LanguageModel) -> None:
    options = DecodingOptions(max_new_tokens=30, temperature=1.1)
    several = alone(lm, "ROMEO:", DecodingOptions(max_new_tokens=30, temperature=1.1, num_samples=3), 4, n=3)
    batch = DecodeBatch(lm.model, lm.tokenizer)
    rows = [batch.add("ROMEO:", options, seed=4, sample=i) for i in range(3)]
    got: dict[int, str] = {}
    while len(batch):
        for e in batch.step():
            if e.done and e.result is not None:
                got[e.row] = e.result.text
    assert [got[r] for r in rows] == several and len(set(several)) == 3


def test_word_rows_end_at_eos_and_leave_the_batch(word_lm: charlm.LanguageModel) -> None:
    options = DecodingOptions(max_new_tokens=80, lines=1)
    requests = [(p, options, i) for i, p in enumerate(["the cat", "a", "the", "in the"])]
    for (prompt, o, seed), got in zip(requests, run_batch(word_lm.model, word_lm.tokenizer, requests)):
        [want] = charlm.sampling.generate(word_lm.model, word_lm.tokenizer, prompt, o, seed)
        assert (got.text, got.finish_reason) == (want.text, want.finish_reason)


def test_cancel_frees_the_slot_at_once(lm: charlm.LanguageModel) -> None:
    batch = DecodeBatch(lm.model, lm.tokenizer, max_rows=2)
    a = batch.add("a", DecodingOptions(max_new_tokens=100), seed=0)
    b = batch.add("b", DecodingOptions(max_new_tokens=100), seed=0)
    with pytest.raises(ConfigError, match="full"):
        batch.add("c", DecodingOptions(max_new_tokens=100), seed=0)
    batch.step()
    assert batch.cancel(a) and not batch.cancel(a) and len(batch) == 1
    assert {e.row for e in batch.step()} == {b}
    c = batch.add("c", DecodingOptions(max_new_tokens=5), seed=0)
    assert c not in (a, b) and len(batch) == 2


def test_logprobs_give_the_chosen_tokens_and_the_most_likely_alternatives(lm: charlm.LanguageModel) -> None:
    batch = DecodeBatch(lm.model, lm.tokenizer)
    batch.add("ROMEO:", DecodingOptions(max_new_tokens=12, temperature=1.2), seed=5, logprobs=3)
    tokens, result = [], None
    while len(batch):
        for e in batch.step():
            tokens += e.tokens
            result = e.result or result
    assert result is not None and len(tokens) == 12
    assert "".join(t.text for t in tokens) == result.text
    assert sum(t.logprob for t in tokens) == pytest.approx(result.logprob, rel=1e-6)
    scored = lm.score("ROMEO:" + result.text).logprobs[-12:]  # the model's own figures, from perplexity's path
    assert [t.logprob for t in tokens] == pytest.approx(list(scored), abs=1e-4)
    for t in tokens:
        values = [lp for _, lp in t.top]
        assert len(t.top) == 3 and values == sorted(values, reverse=True)
        assert t.logprob <= values[0] + 1e-6 and (t.text in dict(t.top) or t.logprob <= values[-1] + 1e-6)


def test_bad_rows_are_refused_in_one_line(lm: charlm.LanguageModel) -> None:
    batch = DecodeBatch(lm.model, lm.tokenizer)
    with pytest.raises(ConfigError, match="beam"):
        batch.add("a", DecodingOptions(strategy="beam"), seed=0)
    with pytest.raises(ConfigError, match="one row per sample"):
        batch.add("a", DecodingOptions(num_samples=2), seed=0)
    with pytest.raises(ConfigError, match="logprobs"):
        batch.add("a", DecodingOptions(), seed=0, logprobs=99)
    assert len(batch) == 0 and batch.step() == []
