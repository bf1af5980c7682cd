"""Decoding: filters with worked examples, strategies against scripted probability
tables, full-width beam search against brute-force enumeration, stop conditions,
streaming text, and the state carried across steps."""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.data.tokenizers import CharTokenizer, WordTokenizer, fit_tokenizer
from charlm.errors import ConfigError, TokenizerError
from charlm.models import LMOutput, ModelConfig, RNNLanguageModel
from charlm.sampling import (
    DecodingOptions,
    Prompt,
    StopMatcher,
    TextDecoder,
    apply_temperature,
    beam_search,
    choose,
    describe_unknown,
    encode_prompt,
    filter_logits,
    generate,
    stream,
    top_k_filter,
    top_p_filter,
    warm_up,
)
from charlm.sampling.rng import RowRandom

NEG = float("-inf")


# ------------------------------------------------------------------ fixtures
class ScriptedModel(nn.Module):
    """A "model" whose next-token distribution is a table keyed by the whole prefix.

    The state carries the prefix as a code, shaped (1, B, 1) like a real state, so
    `reorder_state` moves it with the beams. Prefixes missing from `table` get
    `default`, or else a fixed pseudo-random distribution. Counts forward/step
    calls and batch sizes.
    """

    def __init__(
        self,
        vocab: int,
        table: dict[tuple[int, ...], list[float]] | None = None,
        seed: int = 0,
        default: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.vocab, self.table, self.seed, self.default = vocab, table or {}, seed, default
        self.prefixes: list[tuple[int, ...]] = [()]
        self.codes: dict[tuple[int, ...], int] = {(): 0}
        self.forward_calls = 0
        self.step_batches: list[int] = []

    def logp(self, prefix: tuple[int, ...]) -> torch.Tensor:
        if prefix in self.table or self.default is not None:
            return torch.tensor(self.table.get(prefix, self.default), dtype=torch.float64).log()
        g = torch.Generator().manual_seed(zlib.crc32(repr((self.seed, prefix)).encode()))
        return torch.log_softmax(2.5 * torch.randn(self.vocab, generator=g, dtype=torch.float64), -1)

    def _code(self, prefix: tuple[int, ...]) -> int:
        if prefix not in self.codes:
            self.codes[prefix] = len(self.prefixes)
            self.prefixes.append(prefix)
        return self.codes[prefix]

    state_floats = 0
    device = torch.device("cpu")

    @property
    def vocab_size(self) -> int:
        return self.vocab

    def init_state(self, batch: int):
        return (torch.zeros(1, batch, 1, dtype=torch.float64),)

    def _advance(self, ids: torch.Tensor, state):
        prefixes = [self.prefixes[int(c)] + (int(i),) for c, i in zip(state[0][0, :, 0], ids)]
        logits = torch.stack([self.logp(p) for p in prefixes]).float()  # (B, V)
        codes = torch.tensor([[[float(self._code(p))] for p in prefixes]], dtype=torch.float64)
        return logits, (codes,)

    def forward(self, ids: torch.Tensor, state=None):
        self.forward_calls += 1
        state = state if state is not None else self.init_state(ids.size(0))
        out = []
        for t in range(ids.size(1)):
            logits, state = self._advance(ids[:, t], state)
            out.append(logits)
        return LMOutput(torch.stack(out, 1), None, state)  # (B, T, V)

    def step(self, ids: torch.Tensor, state=None):
        self.step_batches.append(ids.size(0))
        return self._advance(ids, state if state is not None else self.init_state(ids.size(0)))


class IdTokenizer:
    """Ids are letters a, b, c, ...; `eos` (if given) decodes to a line end."""

    kind = "word"
    unk_id = None

    def __init__(self, vocab: int, eos: int | None = None) -> None:
        self.vocab_size, self.eos_id = vocab, eos

    def _sym(self, i: int) -> str:
        return "\n" if i == self.eos_id else chr(ord("a") + i)

    def encode(self, text: str) -> list[int]:
        return [self.eos_id if c == "\n" else ord(c) - ord("a") for c in text if c != "\n" or self.eos_id is not None]

    def decode(self, ids) -> str:
        return "".join(self._sym(int(i)) for i in ids)

    def unknown_units(self, text: str) -> list[str]:
        return [c for c in dict.fromkeys(text) if c != "\n" and not 0 <= ord(c) - ord("a") < self.vocab_size]


TEXT = "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met.\n" * 4


@pytest.fixture(scope="module")
def char_tok() -> CharTokenizer:
    return fit_tokenizer("char", TEXT)


def tiny_model(vocab: int, cell: str = "lstm", seed: int = 0, hidden: int = 16) -> RNNLanguageModel:
    torch.manual_seed(seed)
    model = RNNLanguageModel(ModelConfig(vocab_size=vocab, cell=cell, num_layers=2, hidden_size=hidden, emb_size=8))
    with torch.no_grad():  # sharper than the init, so argmax has clear winners
        model.decoder.weight.mul_(30.0)
    return model.eval()


@pytest.fixture(scope="module")
def char_model(char_tok) -> RNNLanguageModel:
    return tiny_model(char_tok.vocab_size)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ filters: worked examples
def test_temperature_divides_logits_and_is_pure():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    out = apply_temperature(logits, 0.5)
    assert torch.equal(out, torch.tensor([[2.0, 4.0, 6.0]]))
    assert torch.equal(logits, torch.tensor([[1.0, 2.0, 3.0]]))  # input untouched
    # T < 1 sharpens: the top token's probability rises from 0.665 to 0.867
    assert out.softmax(-1)[0, 2] > logits.softmax(-1)[0, 2]
    assert out.softmax(-1)[0, 2].item() == pytest.approx(0.8668, abs=1e-4)


def test_top_k_keeps_k_largest_worked_example():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [[NEG, 3.0, 2.0, NEG]]
    assert logits.tolist() == [[1.0, 3.0, 2.0, 0.0]]  # pure
    assert top_k_filter(logits, 4).tolist() == logits.tolist()
    assert top_k_filter(logits, 4) is not logits


def _logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs], dtype=torch.float64).log()


def test_top_p_keeps_smallest_set_reaching_p_worked_example():
    # probabilities, deliberately not in sorted order: 0.15, 0.5, 0.05, 0.3
    logits = _logits_of([0.15, 0.5, 0.05, 0.3])
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False, False]  # 0.5 alone reaches 0.4
    assert kept(0.75) == [False, True, False, True]  # 0.5 + 0.3 = 0.8 >= 0.75
    assert kept(0.85) == [True, True, False, True]  # needs 0.15 too: 0.95
    assert kept(0.99) == [True, True, True, True]
    assert kept(1.0) == [True, True, True, True]
    out = top_p_filter(logits, 0.75)
    assert torch.equal(out[0, [1, 3]], logits[0, [1, 3]])  # kept logits are unchanged


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=12), st.floats(0.05, 0.99))
def test_top_p_set_is_minimal_and_reaches_p(values, p):
    logits = torch.tensor([values], dtype=torch.float64)
    probs = logits.softmax(-1)[0]
    kept = torch.isfinite(top_p_filter(logits, p))[0]
    mass = probs[kept].sum().item()
    assert mass >= p - 1e-9
    # dropping the least likely kept token falls below p (unless it ties a dropped one)
    smallest = probs[kept].min().item()
    assert mass - smallest < p + 1e-9 or math.isclose(smallest, probs[~kept].max().item() if (~kept).any() else -1)


def test_filters_compose_temperature_then_top_k_then_top_p():
    logits = _logits_of([0.5, 0.3, 0.15, 0.05])
    # without temperature, top-p 0.9 needs three tokens (0.5 + 0.3 = 0.8 < 0.9)
    assert torch.isfinite(filter_logits(logits, 1.0, None, 0.9)).sum() == 3
    # T = 0.5 squares the probabilities: 0.685, 0.247, 0.062, 0.007 -> two reach 0.9
    tempered = filter_logits(logits, 0.5, None, 0.9)
    assert torch.isfinite(tempered)[0].tolist() == [True, True, False, False]
    assert tempered.softmax(-1)[0, 0].item() == pytest.approx(0.25 / 0.34, abs=1e-6)
    # top-k 1 then top-p: only the argmax survives whatever p is
    assert torch.isfinite(filter_logits(logits, 1.0, 1, 0.99))[0].tolist() == [True, False, False, False]


def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = _logits_of([0.5, 0.3, 0.15, 0.05]).float().expand(20000, -1)
    ids, logp = choose(logits, DecodingOptions(top_p=0.85), RowRandom.seeded(3, rows=logits.size(0)))
    freq = torch.bincount(ids, minlength=4).double() / ids.numel()
    expected = torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95
    assert torch.allclose(freq, expected.double(), atol=0.015)
    assert freq[3] == 0
    # the reported log-prob is the model's, not the filtered distribution's
    assert torch.allclose(logp, logits.log_softmax(-1).gather(1, ids[:, None]).squeeze(1))


def test_top_k_sampling_never_leaves_the_top_k():
    g = seeded(1)
    logits = torch.randn(500, 30, generator=g) * 3
    ids, _ = choose(logits, DecodingOptions(top_k=3, temperature=2.0), RowRandom.seeded(1, rows=500))
    top3 = logits.topk(3, -1).indices
    assert (top3 == ids[:, None]).any(1).all()
    assert len(set(ids.tolist())) > 3  # it does sample, across rows
    assert not (logits.argmax(-1) == ids).all()


def test_top_p_sampling_never_leaves_the_nucleus():
    g = seeded(2)
    logits = torch.randn(300, 20, generator=g) * 2
    ids, _ = choose(logits, DecodingOptions(top_p=0.6), RowRandom.seeded(2, rows=300))
    allowed = torch.isfinite(top_p_filter(logits, 0.6))
    assert allowed.gather(1, ids[:, None]).all()


# ------------------------------------------------------------------ greedy and its equivalents
def _hand_greedy(model, prompt_ids: list[int], n: int, eos: int | None = None) -> list[int]:
    """Argmax unrolled by hand through `forward` (not `step`), one token at a time."""
    with torch.no_grad():
        fwd = model(torch.tensor([prompt_ids]), None)
        logits, state = fwd.logits, fwd.state
        out = []
        for _ in range(n):
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            if nxt == eos:
                break
            fwd = model(torch.tensor([[nxt]]), state)
            logits, state = fwd.logits, fwd.state
    return out


def test_greedy_equals_hand_unrolled_argmax(char_tok, char_model):
    prompt = "the c"
    prompt_ids = list(encode_prompt(char_tok, prompt).ids)
    assert prompt_ids == char_tok.encode("\n" + prompt)  # read as the start of a line
    ids = _hand_greedy(char_model, prompt_ids, 40)
    [r] = generate(char_model, char_tok, prompt, DecodingOptions(strategy="greedy", max_new_tokens=40))
    assert r.ids == ids
    assert r.text == char_tok.decode(ids)
    assert r.finish_reason == "length" and r.num_tokens == 40
    # log-prob is the sum of the model's log-probs of the chosen ids
    with torch.no_grad():
        logits = char_model(torch.tensor([prompt_ids + ids])).logits
    lp = logits[0, len(prompt_ids) - 1 : -1].log_softmax(-1).gather(1, torch.tensor(ids)[:, None]).sum().item()
    assert r.logprob == pytest.approx(lp, abs=1e-3)


def test_top_k_one_and_low_temperature_equal_greedy(char_tok, char_model):
    greedy = generate(char_model, char_tok, "a ", DecodingOptions(strategy="greedy", max_new_tokens=30))[0].ids
    for opts in (
        DecodingOptions(top_k=1, max_new_tokens=30),
        DecodingOptions(temperature=1e-6, max_new_tokens=30),
        DecodingOptions(temperature=0.0, max_new_tokens=30),  # 0 means greedy
    ):
        assert generate(char_model, char_tok, "a ", opts, seeded(7))[0].ids == greedy
    assert (
        generate(char_model, char_tok, "a ", DecodingOptions(temperature=3.0, max_new_tokens=30), seeded(7))[0].ids
        != greedy
    )


def test_same_seed_same_text(char_tok, char_model):
    opts = DecodingOptions(max_new_tokens=60, temperature=1.5, top_p=0.95)
    a = generate(char_model, char_tok, "the", opts, seeded(11))[0]
    b = generate(char_model, char_tok, "the", opts, seeded(11))[0]
    c = generate(char_model, char_tok, "the", opts, seeded(12))[0]
    assert a.text == b.text and a.logprob == b.logprob
    assert a.text != c.text
    s = stream(char_model, char_tok, "the", opts, seeded(11))
    assert "".join(s) == a.text and s.result.ids == a.ids


# ------------------------------------------------------------------ state and batching
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_carried_across_steps_equals_rerunning_the_prefix(cell):
    model = tiny_model(11, cell=cell, seed=3)
    g = seeded(5)
    seq = torch.randint(0, 11, (2, 12), generator=g)  # two sequences as a batch
    logits, state = warm_up(model, seq[0, :4].tolist())
    fwd = model(seq[:, :4])
    logits_b, state_b = fwd.logits, fwd.state  # the batched version of the same warm-up
    logits, state = logits_b[:, -1], state_b
    for t in range(4, 12):
        full = model(seq[:, : t + 1]).logits  # (2, t+1, V) from scratch
        logits, state = model.step(seq[:, t], state)
        assert torch.allclose(logits, full[:, -1], atol=1e-5), t


def test_prompt_is_read_in_one_forward_pass_and_samples_are_one_batch():
    model = ScriptedModel(5)
    tok = IdTokenizer(5)
    out = generate(model, tok, "abcdeabcdeabcde", DecodingOptions(max_new_tokens=20, num_samples=6), seeded(1))
    assert model.forward_calls == 1  # the 15-token prompt: one batched pass, no stepping
    assert model.step_batches == [6] * 19  # then one step per new token, all 6 samples together
    assert len(out) == 6 and all(r.num_tokens == 20 for r in out)
    assert len({r.text for r in out}) > 1


def test_batched_samples_follow_the_table():
    # after the prompt "a" (id 0): b (id 1) with certainty; after "c" (id 2): uniform
    model = ScriptedModel(3, {(0,): [0.0, 1.0, 0.0], (2,): [1 / 3, 1 / 3, 1 / 3]})
    out = generate(model, IdTokenizer(3), "a", DecodingOptions(max_new_tokens=1, num_samples=50), seeded(4))
    assert {r.ids[0] for r in out} == {1}
    assert all(r.logprob == pytest.approx(0.0, abs=1e-6) for r in out)
    out = generate(model, IdTokenizer(3), "c", DecodingOptions(max_new_tokens=1, num_samples=200), seeded(4))
    counts = torch.bincount(torch.tensor([r.ids[0] for r in out]), minlength=3)
    assert (counts > 40).all()
    assert all(r.logprob == pytest.approx(math.log(1 / 3), abs=1e-5) for r in out)


def test_generate_restores_training_mode(char_tok):
    model = tiny_model(char_tok.vocab_size)
    model.train()
    generate(model, char_tok, "a", DecodingOptions(max_new_tokens=3), seeded())
    assert model.training
    s = stream(model, char_tok, "a", DecodingOptions(max_new_tokens=3), seeded())
    list(s)
    assert model.training


# ------------------------------------------------------------------ beam search
def _brute_force(model, prompt: list[int], V: int, L: int, alpha: float, eos: int | None, eos_target: int = 1):
    """Every complete sequence with its exact log-prob, scored and ranked.

    Complete: ends at its eos_target-th <eos> (length <= L), or reaches L without it.
    """
    seqs = []
    for n in range(1, L + 1):
        for s in itertools.product(range(V), repeat=n):
            n_eos = s.count(eos) if eos is not None else 0
            ended = eos is not None and s[-1] == eos and n_eos == eos_target
            if n_eos > eos_target or (n_eos == eos_target and not ended):
                continue
            if ended or n == L:
                seqs.append(s)
    scored = []
    for s in seqs:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + list(s)])).logits
        lp = logits[0, len(prompt) - 1 : -1].double().log_softmax(-1).gather(1, torch.tensor(s)[:, None]).sum().item()
        scored.append((lp / len(s) ** alpha, lp, list(s)))
    scored.sort(key=lambda x: -x[0])
    return scored


def _beam(
    model,
    prompt: list[int],
    width: int,
    L: int,
    alpha: float,
    eos: int | None,
    n_best: int | None = None,
    eos_target: int = 1,
    exact: bool = True,
):
    """Exact search by default: the brute-force comparisons need the search to run to its length limit."""
    logits, state = warm_up(model, prompt)
    return beam_search(
        model,
        logits,
        state,
        width=width,
        max_new_tokens=L,
        length_penalty=alpha,
        n_best=n_best,
        eos_id=eos,
        eos_target=eos_target,
        exact=exact,
    )


def _assert_same_ranking(hyps, brute):
    assert [h.ids for h in hyps] == [s for _, _, s in brute[: len(hyps)]]
    for h, (score, lp, _) in zip(hyps, brute):
        assert h.score == pytest.approx(score, abs=1e-4)
        assert h.logprob == pytest.approx(lp, abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
def test_full_width_beam_equals_brute_force_with_eos(alpha):
    V, L, eos = 4, 4, 3
    model = ScriptedModel(V, seed=1)
    brute = _brute_force(model, [0], V, L, alpha, eos)
    assert len(brute) == 1 + 3 + 9 + 27 + 81  # ended at steps 1..4, or 4 tokens without <eos>
    hyps = _beam(model, [0], V**L, L, alpha, eos, n_best=V**L)
    assert len(hyps) == len(brute)
    _assert_same_ranking(hyps, brute)
    assert all(h.reached_eos == (h.ids[-1] == eos) for h in hyps)


def test_full_width_beam_equals_brute_force_with_two_line_ends():
    V, L, eos = 3, 4, 2
    model = ScriptedModel(V, seed=4)
    brute = _brute_force(model, [0], V, L, 0.5, eos, eos_target=2)
    hyps = _beam(model, [0], V**L, L, 0.5, eos, n_best=V**L, eos_target=2)
    _assert_same_ranking(hyps, brute)
    assert [h.ids for h in hyps] == [s for _, _, s in brute]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_full_width_beam_equals_brute_force_without_eos_on_a_real_model(cell):
    V, L = 3, 4
    model = tiny_model(V, cell=cell, seed=2, hidden=8)
    brute = _brute_force(model, [1, 0], V, L, 1.0, None)
    assert len(brute) == V**L
    hyps = _beam(model, [1, 0], V**L, L, 1.0, None)
    _assert_same_ranking(hyps, brute)


def test_full_width_beam_equals_brute_force_with_eos_on_a_real_model():
    V, L, eos = 4, 4, 0
    model = tiny_model(V, seed=5, hidden=8)
    with torch.no_grad():
        model.decoder.bias[eos] += 2.0  # make <eos> likely enough to matter
    brute = _brute_force(model, [1], V, L, 1.0, eos)
    hyps = _beam(model, [1], 64, L, 1.0, eos, n_best=20)  # 64 >= the 27 live prefixes: still exhaustive
    _assert_same_ranking(hyps, brute)
    assert any(h.reached_eos for h in hyps[:5]) and any(not h.reached_eos for h in hyps)


def test_narrow_beam_is_not_exhaustive_but_scores_are_true():
    V, L, eos = 4, 5, 3
    model = ScriptedModel(V, seed=9)
    brute = {tuple(s): (score, lp) for score, lp, s in _brute_force(model, [0], V, L, 1.0, eos)}
    hyps = _beam(model, [0], 2, L, 1.0, eos)
    assert 1 <= len(hyps) <= 2
    for h in hyps:  # whatever it finds, it scores exactly
        assert h.score == pytest.approx(brute[tuple(h.ids)][0], abs=1e-4)
    assert hyps == sorted(hyps, key=lambda h: -h.score)


def test_width_one_equals_greedy(char_tok, char_model):
    greedy = generate(char_model, char_tok, "the ", DecodingOptions(strategy="greedy", max_new_tokens=25))[0]
    beam = generate(char_model, char_tok, "the ", DecodingOptions(strategy="beam", beam_width=1, max_new_tokens=25))
    assert [b.ids for b in beam] == [greedy.ids]
    assert beam[0].logprob == pytest.approx(greedy.logprob, abs=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_width_one_equals_greedy_with_eos(seed):
    V, L, eos = 4, 8, 3
    model = ScriptedModel(V, seed=seed)
    greedy = _hand_greedy(model, [0], L, eos)
    [h] = _beam(model, [0], 1, L, 0.0, eos)
    assert h.ids == greedy
    # through generate, the prompt "a" is read after a line end (<eos> here)
    greedy = _hand_greedy(model, [eos, 0], L, eos)
    [g] = generate(model, IdTokenizer(V, eos), "a", DecodingOptions(strategy="greedy", max_new_tokens=L))
    assert g.ids == greedy and g.finish_reason == ("eos" if greedy[-1] == eos else "length")


def test_width_one_equals_greedy_even_when_an_earlier_ending_scores_better():
    a, b, eos = 0, 1, 2
    table = {
        (a,): [0.6, 0.0, 0.4],  # greedy takes a; ending now (log 0.4 = -0.92) would score better overall
        (a, a): [0.0, 0.55, 0.45],
        (a, a, b): [0.05, 0.05, 0.9],
    }
    model = ScriptedModel(3, table)
    greedy = _hand_greedy(model, [a], 6, eos)
    assert greedy == [a, b, eos]
    [h] = _beam(model, [a], 1, 6, 0.0, eos)
    assert h.ids == greedy  # a finished hypothesis counts only when ranked within the beam
    assert _beam(model, [a], 2, 6, 0.0, eos)[0].ids == [eos]  # a wider beam does find it


def test_early_stop_keeps_a_longer_hypothesis_that_normalisation_prefers():
    a, b, eos = 0, 1, 2
    table = {(a,): [0.0, 0.5, 0.5], (a, b): [0.0, 1.0, 0.0], (a, b, b): [0.0, 1.0, 0.0], (a, b, b, b): [0.0, 0.0, 1.0]}
    model = ScriptedModel(3, table)
    # after one step, [eos] is finished at -0.69 and the live [b] has the same raw sum, but
    # [b b b eos] will score -0.69 / 4: the search must not stop at the raw-sum bound
    [h] = _beam(model, [a], 2, 5, 1.0, eos, n_best=1)
    assert h.ids == [b, b, b, eos]
    assert h.score == pytest.approx(math.log(0.5) / 4, abs=1e-6)
    [h0] = _beam(model, [a], 2, 5, 0.0, eos, n_best=1)
    assert h0.ids in ([eos], [b, b, b, eos])  # a tie on the raw sum


def test_default_early_stop_compares_live_hypotheses_at_their_current_length():
    a, b, eos = 0, 1, 2
    table = {(a,): [0.0, 0.5, 0.5], (a, b): [0.0, 1.0, 0.0], (a, b, b): [0.0, 1.0, 0.0], (a, b, b, b): [0.0, 0.0, 1.0]}
    model = ScriptedModel(3, table)
    # the live [b] scores -0.69 / 1 now, no better than the finished [eos]: the heuristic stops there
    [h] = _beam(model, [a], 2, 5, 1.0, eos, n_best=1, exact=False)
    assert h.ids == [eos] and model.step_batches == []


def test_a_huge_length_with_one_line_ends_as_soon_as_the_line_is_found():
    """The issue's runaway: --lines 1 with an enormous --length must not search to the limit."""
    V, eos = 4, 3
    model = ScriptedModel(V, default=[0.3, 0.2, 0.1, 0.4])  # a line end is likely at every step
    hyps = _beam(model, [0], 5, 10**6, 1.0, eos, n_best=3, exact=False)
    assert len(hyps) == 3 and all(h.reached_eos for h in hyps)
    assert len(model.step_batches) < 20


def test_beam_stops_early_once_nothing_can_beat_the_finished():
    model = ScriptedModel(3, {(0,): [0.05, 0.05, 0.9]})
    [h] = _beam(model, [0], 3, 50, 0.0, 2, n_best=1)
    assert h.ids == [2]
    assert model.step_batches == []  # no step beyond the first: every live prefix is already worse
    model = ScriptedModel(3, {(0,): [0.05, 0.05, 0.9]})
    _beam(model, [0], 3, 50, 0.0, None, n_best=1)
    assert len(model.step_batches) == 49  # without <eos> it runs to the length limit


def test_length_normalisation_flips_the_winner():
    a, b, eos = 0, 1, 2
    table = {
        (a,): [0.2, 0.3, 0.5],  # after the prompt: stop now with 0.5, or b with 0.3
        (a, b): [0.025, 0.025, 0.95],  # after b, <eos> is near certain
        (a, a): [1 / 3, 1 / 3, 1 / 3],
    }
    model = ScriptedModel(3, table)
    raw = _beam(model, [a], 3, 3, 0.0, eos)
    norm = _beam(model, [a], 3, 3, 1.0, eos)
    assert raw[0].ids == [eos]  # log 0.5 = -0.693 beats log 0.3 + log 0.95 = -1.255
    assert raw[0].score == pytest.approx(math.log(0.5), abs=1e-5)
    assert norm[0].ids == [b, eos]  # -1.255 / 2 = -0.628 beats -0.693 / 1
    assert norm[0].score == pytest.approx((math.log(0.3) + math.log(0.95)) / 2, abs=1e-5)
    assert norm[1].ids == [eos]


def test_beam_generate_returns_n_best_sorted_with_text(char_tok, char_model):
    out = generate(
        char_model,
        char_tok,
        "the ",
        DecodingOptions(strategy="beam", beam_width=4, n_best=3, max_new_tokens=12, length_penalty=0.6),
    )
    assert len(out) == 3
    assert [r.score for r in out] == sorted((r.score for r in out), reverse=True)
    assert len({tuple(r.ids) for r in out}) == 3
    for r in out:
        assert r.text == char_tok.decode(r.ids)
        assert r.score == pytest.approx(r.logprob / r.num_tokens**0.6, abs=1e-5)


def test_beam_with_stop_string_finishes_hypotheses_there(char_tok, char_model):
    plain = generate(char_model, char_tok, "the ", DecodingOptions(strategy="beam", beam_width=3, max_new_tokens=15))
    stop = plain[0].text[3]  # a character the best hypothesis produces
    out = generate(
        char_model, char_tok, "the ", DecodingOptions(strategy="beam", beam_width=3, max_new_tokens=15, stop=(stop,))
    )
    assert all(stop not in r.text for r in out)
    assert any(r.finish_reason == "stop" for r in out)
    for r in out:
        if r.finish_reason == "stop":
            assert char_tok.decode(r.ids) == r.text + stop


# ------------------------------------------------------------------ stop conditions
def test_eos_stops_a_word_model_after_n_lines():
    tok = WordTokenizer(["<unk>", "<eos>", "the", "cat", "sat"])
    V = tok.vocab_size
    # a line end is likely everywhere (prefixes are the primer <eos>, "the", then new tokens)
    model = ScriptedModel(V, default=[0.0, 0.5, 0.2, 0.2, 0.1])
    model.table[(1, 2)] = [0.0, 0.1, 0.1, 0.7, 0.1]  # greedy: "the" -> "cat", then <eos>
    one = generate(model, tok, "the", DecodingOptions(strategy="greedy", max_new_tokens=50))[0]
    assert one.finish_reason == "eos" and one.ids[-1] == tok.eos_id and one.ids.count(tok.eos_id) == 1
    assert one.ids == [3, 1] and one.text == " cat\n"
    three = generate(model, tok, "the", DecodingOptions(max_new_tokens=50, lines=3, num_samples=4), seeded(1))
    for r in three:
        assert r.finish_reason == "eos" and r.ids.count(tok.eos_id) == 3 and r.text.count("\n") == 3


def test_max_new_tokens_is_exact(char_tok, char_model):
    for n in (1, 7):
        out = generate(char_model, char_tok, "a", DecodingOptions(max_new_tokens=n, num_samples=3), seeded())
        assert [r.num_tokens for r in out] == [n] * 3 and all(r.finish_reason == "length" for r in out)


def test_stop_string_cuts_text_before_it(char_tok, char_model):
    opts = DecodingOptions(max_new_tokens=80, temperature=1.3)
    full = generate(char_model, char_tok, "the", opts, seeded(5))[0].text
    stop = full[20:22]
    cut = full.index(stop)
    out = generate(
        char_model, char_tok, "the", DecodingOptions(max_new_tokens=80, temperature=1.3, stop=(stop, "zzz")), seeded(5)
    )[0]
    assert out.text == full[:cut] and out.finish_reason == "stop"
    assert out.num_tokens == cut + len(stop)  # the tokens up to the one completing the stop
    s = stream(
        char_model, char_tok, "the", DecodingOptions(max_new_tokens=80, temperature=1.3, stop=(stop,)), seeded(5)
    )
    pieces = list(s)
    assert "".join(pieces) == out.text and stop not in "".join(pieces)


def test_lines_for_a_char_model_count_newlines_in_the_text():
    tok = CharTokenizer(["\n", "a", "b"])  # ids: <unk> 0, "\n" 1, a 2, b 3
    model = ScriptedModel(4, default=[0.0, 0.2, 0.4, 0.4])
    out = generate(model, tok, "ab", DecodingOptions(max_new_tokens=60, lines=2, num_samples=5), seeded(2))
    for r in out:
        assert r.text.count("\n") == 2 and r.text.endswith("\n") and r.finish_reason == "stop"


def test_stop_matcher_holds_back_possible_starts_of_a_stop():
    m = StopMatcher(["aab"])
    emitted = [m.feed(c) for c in "xaaab"]
    assert emitted == ["x", "", "", "a", ""]
    assert m.stopped and "".join(emitted) == "xa"
    m = StopMatcher(["END", "\n\n"])
    assert m.feed("one\nEN") == "one\n"  # "EN" may start "END": held back
    assert m.feed("D more") == "" and m.stopped
    m = StopMatcher(["END", "\n\n"])
    assert m.feed("one\n") == "one"  # the line end may start "\n\n"
    assert m.feed("two") == "\ntwo" and not m.stopped
    assert m.feed("\n\nEND") == "" and m.stopped  # both complete in one piece: the earlier one cuts
    m = StopMatcher(["zz"])
    assert m.feed("abz") == "ab" and m.flush() == "z"  # at the end, the held-back text is released
    m = StopMatcher(lines=2)
    assert m.feed("a\nb") == "a\nb" and m.feed("c\nd\n") == "c\n" and m.stopped


def test_text_decoder_streams_subword_text_without_broken_characters():
    tok = fit_tokenizer("subword", TEXT * 3, vocab_size=300)
    text = "the cat é😀 sat"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # byte fallback made several pieces for é and 😀
    dec = TextDecoder(tok, tok.encode("a dog "))
    pieces = [dec.push([i]) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_text_decoder_keeps_word_spacing_and_line_ends():
    tok = WordTokenizer(["<unk>", "<eos>", "the", "cat", "sat"])
    dec = TextDecoder(tok, tok.encode("the"))
    pieces = [dec.push([i]) for i in (3, 4, 1, 2, 3)]
    assert pieces == [" cat", " sat", "\n", "the", " cat"]


# ------------------------------------------------------------------ prompts
def test_prompt_out_of_vocabulary_becomes_unk_with_a_warning(char_tok):
    p = encode_prompt(char_tok, "the ñ cat ü ñ")
    assert p.unknown == ("ñ", "ü")
    assert p.ids.count(char_tok.unk_id) == 3
    msg = describe_unknown(char_tok, p)
    assert "2 characters" in msg and "'ñ'" in msg and "'ü'" in msg and "<unk>" in msg
    assert describe_unknown(char_tok, encode_prompt(char_tok, "the cat")) is None
    word = WordTokenizer(["<unk>", "<eos>", "the", "cat"])
    assert "1 word " in describe_unknown(word, encode_prompt(word, "the zebra"))


def test_unrepresentable_prompt_is_an_error():
    tok = IdTokenizer(3)  # no <unk> at all
    with pytest.raises(TokenizerError, match="cannot represent.*'z'"):
        encode_prompt(tok, "abz")


def test_prompts_are_read_after_a_line_end_like_evaluation(char_tok):
    from charlm.evaluation.scoring import context_id

    assert encode_prompt(char_tok, "").ids == tuple(char_tok.encode("\n"))
    assert encode_prompt(char_tok, "ab").ids == tuple(char_tok.encode("\nab"))
    word = WordTokenizer(["<unk>", "<eos>", "the"])
    assert encode_prompt(word, "").ids == (word.eos_id,)
    no_newline = CharTokenizer(["a", "b"])
    assert encode_prompt(no_newline, "").ids == (no_newline.unk_id,)
    subword = fit_tokenizer("subword", TEXT * 3, vocab_size=300)
    for tok in (char_tok, word, no_newline, subword):  # the same rule as `charlm perplexity`
        assert encode_prompt(tok, "").ids == (context_id(tok),)
    with pytest.raises(ConfigError, match="give a prompt"):
        encode_prompt(IdTokenizer(3), "")  # no line end, no <eos>, no <unk>


def test_prompt_objects_are_accepted(char_tok, char_model):
    p = encode_prompt(char_tok, "the")
    assert isinstance(p, Prompt)
    a = generate(char_model, char_tok, p, DecodingOptions(strategy="greedy", max_new_tokens=5))
    b = generate(char_model, char_tok, "the", DecodingOptions(strategy="greedy", max_new_tokens=5))
    assert a[0].ids == b[0].ids


# ------------------------------------------------------------------ bad options
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top-k"),
        ({"top_p": 0.0}, "top-p"),
        ({"top_p": 1.5}, "top-p"),
        ({"beam_width": 0}, "beam width"),
        ({"max_new_tokens": 0}, "length"),
        ({"length_penalty": -1.0}, "length penalty"),
        ({"strategy": "nucleus"}, "strategy"),
        ({"num_samples": 0}, "num-samples"),
        ({"num_samples": 2, "strategy": "greedy"}, "needs sampling"),
        ({"num_samples": 2, "temperature": 0.0}, "needs sampling"),
        ({"num_samples": 2, "strategy": "beam"}, "n-best"),
        ({"n_best": 6, "beam_width": 5}, "n-best"),
        ({"stop": ("",)}, "stop"),
        ({"lines": 0}, "lines"),
    ],
)
def test_bad_options_are_one_line_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match) as exc:
        DecodingOptions(**kwargs)
    assert "\n" not in str(exc.value)


def test_top_k_above_the_vocabulary_is_an_error(char_tok, char_model):
    with pytest.raises(ConfigError, match="above the vocabulary size"):
        generate(char_model, char_tok, "a", DecodingOptions(top_k=char_tok.vocab_size + 1))
    generate(char_model, char_tok, "a", DecodingOptions(top_k=char_tok.vocab_size, max_new_tokens=2), seeded())


def test_filters_reject_out_of_range_arguments():
    x = torch.zeros(1, 3)
    for bad in (
        lambda: apply_temperature(x, 0.0),
        lambda: top_k_filter(x, 0),
        lambda: top_p_filter(x, 0.0),
        lambda: top_p_filter(x, 1.1),
    ):
        with pytest.raises(ConfigError):
            bad()


def test_stream_refuses_beam_and_batches(char_tok, char_model):
    with pytest.raises(ConfigError, match="stream"):
        stream(char_model, char_tok, "a", DecodingOptions(strategy="beam"))
    with pytest.raises(ConfigError, match="one sequence"):
        stream(char_model, char_tok, "a", DecodingOptions(num_samples=2))


def test_generation_to_dict_has_text_tokens_logprob(char_tok, char_model):
    [r] = generate(char_model, char_tok, "a", DecodingOptions(max_new_tokens=4), seeded())
    d = r.to_dict()
    assert d["text"] == r.text and d["tokens"] == 4 and d["logprob"] == r.logprob and "score" not in d
    [b] = generate(
        char_model, char_tok, "a", DecodingOptions(strategy="beam", beam_width=2, n_best=1, max_new_tokens=4)
    )
    assert b.to_dict()["score"] == b.score


# ------------------------------------------------------------------ <unk> and other rules from the field
def test_unk_is_never_generated_unless_allowed():
    """A model that puts most of its mass on <unk>: every strategy steers around it by default."""
    tok = CharTokenizer(["\n", "a", "b"])  # <unk> 0, "\n" 1, a 2, b 3
    model = ScriptedModel(4, default=[0.7, 0.05, 0.15, 0.1])
    for opts in (
        DecodingOptions(strategy="greedy", max_new_tokens=20),
        DecodingOptions(max_new_tokens=20, num_samples=8),
        DecodingOptions(strategy="beam", beam_width=3, max_new_tokens=6),
    ):
        for r in generate(model, tok, "a", opts, seeded(3)):
            assert tok.unk_id not in r.ids and "\ufffd" not in r.text
    [g] = generate(model, tok, "a", DecodingOptions(strategy="greedy", max_new_tokens=3))
    assert g.ids == [2, 2, 2] and g.logprob == pytest.approx(3 * math.log(0.15), abs=1e-5)  # the model's own log p
    raw = generate(model, tok, "a", DecodingOptions(strategy="greedy", max_new_tokens=3, allow_unk=True))[0]
    assert raw.ids == [0, 0, 0]
    s = stream(model, tok, "a", DecodingOptions(max_new_tokens=30), seeded(1))
    assert "\ufffd" not in "".join(s) and tok.unk_id not in s.result.ids


def test_streams_leave_grad_mode_and_training_mode_as_they_were(char_tok):
    model = tiny_model(char_tok.vocab_size).train()
    s = stream(model, char_tok, "the", DecodingOptions(max_new_tokens=20), seeded())
    next(iter(s))
    assert torch.is_grad_enabled()  # the caller's code between pieces runs with gradients on
    assert not model.training  # the stream is still running
    s.close()  # abandoned half-way (the CLI does this on Ctrl-C)
    assert model.training and torch.is_grad_enabled()


def test_a_prompt_with_carriage_returns_reads_like_the_corpus_reader_reads_it(char_tok):
    assert encode_prompt(char_tok, "the\r\ncat\rsat").ids == encode_prompt(char_tok, "the\ncat\nsat").ids
    assert encode_prompt(char_tok, "a\r\n").unknown == ()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_new_tokens": 10**9}, "length 1,000,000,000 is above the limit"),
        ({"num_samples": 10**5}, "num-samples"),
        ({"beam_width": 10**4}, "beam width"),
    ],
)
def test_requests_past_the_limits_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DecodingOptions(**kwargs)
