"""Kneser-Ney n-gram models: the formulas against a plain brute-force implementation,
normalisation of every distribution, the engine's interface (forward / step /
token_logprobs agree, state carried across chunks), ARPA round trips and errors,
token names, and KenLM reading our ARPA files the same way we do."""

from __future__ import annotations

import gzip
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from charlm.data.tokenizers import fit_tokenizer
from charlm.errors import CheckpointError, ConfigError
from charlm.evaluation.scoring import score_stream
from charlm.models import KneserNeyModel, ngram_estimate, token_names
from charlm.models.ngram_estimate import kn_discounts
from charlm.sampling import DecodingOptions, generate

LN10 = math.log(10.0)
CORPORA = Path(__file__).resolve().parent.parent / "corpora"


# ------------------------------------------------------------------ a brute-force reference
def discounts_of(adjusted: list[int]) -> list[float]:
    """[0, D1, D2, D3+] from count-of-counts, Chen & Goodman eq. 26, or the documented fallback."""
    n1, n2, n3, n4 = (sum(1 for c in adjusted if c == r) for r in (1, 2, 3, 4))
    if n1 and n2 and n3:
        y = n1 / (n1 + 2 * n2)
        d = [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3]
        if all(0 < x <= r for x, r in zip(d, (1, 2, 3))):
            return [0.0, *d]
    return [0.0, 0.5, 1.0, 1.5]


class BruteForceKN:
    """Interpolated modified Kneser-Ney written plainly: dicts of n-gram tuples and recursion."""

    def __init__(self, stream: list[int], vocab: int, order: int) -> None:
        self.vocab, self.order = vocab, order
        counts = {k: Counter(tuple(stream[i : i + k]) for i in range(len(stream) - k + 1)) for k in range(1, order + 1)}
        self.adjusted = {order: dict(counts[order])}
        for k in range(order - 1, 0, -1):
            left = Counter(g[1:] for g in counts[k + 1])  # distinct tokens seen before each k-gram
            left[tuple(stream[:k])] += 1  # the start of the stream is one more predecessor
            self.adjusted[k] = dict(left)
        self.discounts = {k: discounts_of(list(a.values())) for k, a in self.adjusted.items()}

    def prob(self, w: int, context: tuple[int, ...]) -> float:
        context = context[max(0, len(context) - (self.order - 1)) :] if self.order > 1 else ()
        k = len(context) + 1
        d = self.discounts[k]
        children = {g[-1]: c for g, c in self.adjusted[k].items() if g[:-1] == context}
        if not children:  # a context never followed by a token: weight 1 on the lower order
            return self.prob(w, context[1:])
        total = sum(children.values())
        gamma = sum(d[min(c, 3)] for c in children.values()) / total
        c = children.get(w, 0)
        lower = 1.0 / self.vocab if k == 1 else self.prob(w, context[1:])
        return (c - d[min(c, 3)]) / total + gamma * lower


# ------------------------------------------------------------------ helpers
def stream_of(seed: int, n: int, vocab: int) -> list[int]:
    """A skewed random stream over ids 1..vocab-1 (id 0, <unk>, never occurs)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab)
    return (rng.choice(vocab - 1, size=n, p=p / p.sum()) + 1).tolist()


def state_of(model: KneserNeyModel, histories: list[tuple[int, ...]]) -> tuple[torch.Tensor]:
    """A state whose rows hold the given histories (their last order-1 tokens, -1 padded)."""
    h = model.order - 1
    kept = [list(t[max(0, len(t) - h) :]) if h else [] for t in histories]
    rows = [[-1] * (h - len(t)) + t for t in kept]
    return (torch.tensor(rows, dtype=torch.long).reshape(1, len(histories), h),)


def probs_after(model: KneserNeyModel, histories: list[tuple[int, ...]]) -> np.ndarray:
    """p(w | history) for every history and every id, in float64: (len(histories), V)."""
    V = model.vocab_size
    rows = [h for h in histories for _ in range(V)]
    ids = torch.arange(V).repeat(len(histories))[:, None]  # (H*V, 1)
    lp, _ = model.sequence_logprobs(ids, state_of(model, rows))
    return lp.reshape(len(histories), V).exp().numpy()


def histories_for(stream: list[int], order: int, vocab: int, seed: int = 0) -> list[tuple[int, ...]]:
    """The empty history, seen ones of every length, unseen ones, and ones holding <unk> (id 0)."""
    rng = np.random.default_rng(seed)
    seen = {tuple(stream[i : i + m]) for m in range(1, order) for i in range(0, len(stream) - m, 7)}
    unseen = [tuple(rng.integers(1, vocab, size=m).tolist()) for m in range(1, order) for _ in range(3)]
    with_unk = [(0,) * m for m in range(1, order)] + [(stream[0], 0), (0, stream[1], stream[2])]
    return [()] + sorted(seen) + unseen + with_unk


@pytest.fixture(scope="module")
def char_data() -> tuple[object, np.ndarray]:
    text = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]
    tok = fit_tokenizer("char", text)
    return tok, tok.encode_array(text)


@pytest.fixture(scope="module")
def word_data() -> tuple[object, np.ndarray, np.ndarray]:
    train = (CORPORA / "wikitext-2.valid.txt").read_text(encoding="utf-8")[:150_000]
    test = (CORPORA / "wikitext-2.test.txt").read_text(encoding="utf-8")[:20_000]
    tok = fit_tokenizer("word", train)
    return tok, tok.encode_array(train), np.asarray(tok.encode(test), dtype=np.int64)


# ------------------------------------------------------------------ the formulas
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("seed,length", [(0, 40), (1, 400)])
def test_matches_brute_force(order: int, seed: int, length: int) -> None:
    vocab = 8
    stream = stream_of(seed, length, vocab)
    model = KneserNeyModel.estimate(np.array(stream, dtype=np.uint8), vocab, order)
    ref = BruteForceKN(stream, vocab, order)
    np.testing.assert_allclose(model.discounts, [ref.discounts[k] for k in range(1, order + 1)], rtol=0, atol=1e-12)
    histories = histories_for(stream, order, vocab)
    got = probs_after(model, histories)
    want = np.array([[ref.prob(w, h) for w in range(vocab)] for h in histories])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)


def test_brute_force_cases_cover_both_discount_rules() -> None:
    """The streams above exercise the closed form and the fallback (else the test above proves less)."""
    rules = set()
    for seed, length in [(0, 40), (1, 400)]:
        ref = BruteForceKN(stream_of(seed, length, 8), 8, 4)
        rules |= {tuple(d) == (0.0, 0.5, 1.0, 1.5) for d in ref.discounts.values()}
    assert rules == {True, False}


def test_order_one_is_discounted_frequencies_plus_uniform_share() -> None:
    """The docstring's order-1 rule, worked by hand: counts 1,1,1,2,2,3,4,6 over ids 1..8, V = 10.

    n1=3, n2=2, n3=1, n4=1: Y = 3/7, D1 = 3/7, D2 = 19/14, D3+ = 9/7;
    p(w) = (c(w) - D(c(w))) / 20 + gamma / 10 with gamma = (3 D1 + 2 D2 + 3 D3+) / 20."""
    counts = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3, 7: 4, 8: 6}
    stream = [w for w, c in counts.items() for _ in range(c)]
    model = KneserNeyModel.estimate(np.array(stream), 10, 1)
    d = {0: 0.0, 1: 3 / 7, 2: 19 / 14, 3: 9 / 7}
    np.testing.assert_allclose(model.discounts[0], [d[0], d[1], d[2], d[3]], atol=1e-12)
    gamma = (3 * d[1] + 2 * d[2] + 3 * d[3]) / 20
    want = np.array([(counts.get(w, 0) - d[min(counts.get(w, 0), 3)]) / 20 + gamma / 10 for w in range(10)])
    got = model.next_logprobs(model.init_state(1)).double().exp()[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] == pytest.approx(gamma / 10, rel=1e-6) and got[0] > 0  # <unk>, never seen
    assert got.sum() == pytest.approx(1.0, abs=1e-6)


def test_discount_fallback_when_a_count_of_count_is_zero() -> None:
    assert kn_discounts(np.array([1, 1, 2, 2])).tolist() == [0.0, 0.5, 1.0, 1.5]  # no n3
    assert kn_discounts(np.array([5, 6, 7])).tolist() == [0.0, 0.5, 1.0, 1.5]  # no singletons
    # n1=10, n2=1, n3=1, n4=2: Y = 5/6, D2 = 2 - 3Y = -0.5 is out of range
    assert kn_discounts(np.array([1] * 10 + [2, 3, 4, 4])).tolist() == [0.0, 0.5, 1.0, 1.5]
    d = kn_discounts(np.array([1, 1, 1, 2, 2, 3, 4]))
    assert np.all(np.isfinite(d)) and d[0] == 0.0 and 0 < d[1] <= 1 and 0 < d[2] <= 2 and 0 < d[3] <= 3


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_every_distribution_sums_to_one(order: int, char_data) -> None:
    tok, ids = char_data
    model = KneserNeyModel.estimate(ids, tok.vocab_size, order)
    stream = ids[:3000].tolist()
    histories = histories_for(stream, order, tok.vocab_size)
    state = state_of(model, histories)
    sums = [model.next_logprobs(state).double().exp().sum(-1)]
    for last in (int(ids[5]), 0, tok.vocab_size - 1):  # a seen token, <unk>, the last id, read by step
        logits, _ = model.step(torch.full((len(histories),), last), state)  # (B, V)
        sums.append(logits.double().exp().sum(-1))
    np.testing.assert_allclose(torch.cat(sums).numpy(), 1.0, atol=1e-6)
    exact = probs_after(model, histories[:: max(1, len(histories) // 20)]).sum(1)  # float64 path
    np.testing.assert_allclose(exact, 1.0, atol=1e-12)


def test_a_stream_shorter_than_the_order_still_gives_distributions() -> None:
    model = KneserNeyModel.estimate(np.array([3, 1]), 5, 4)
    assert model.num_ngrams == [5, 1, 0, 0]
    p = probs_after(model, [(), (3,), (3, 1), (1, 2, 4)])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert (p > 0).all()


# ------------------------------------------------------------------ counting
def test_chunked_estimation_equals_one_piece(char_data, tmp_path: Path) -> None:
    tok, ids = char_data
    ids = ids[:4000]
    whole = KneserNeyModel.estimate(ids, tok.vocab_size, 4)
    mm = np.memmap(tmp_path / "ids.bin", dtype=np.uint16, mode="w+", shape=ids.shape)
    mm[:] = ids
    mm.flush()
    for chunk, data in [(3, ids), (997, np.memmap(tmp_path / "ids.bin", dtype=np.uint16, mode="r"))]:
        part = KneserNeyModel.estimate(data, tok.vocab_size, 4, chunk_tokens=chunk)
        for a, b in zip(whole._keys + whole._logp + whole._logbow, part._keys + part._logp + part._logbow):
            np.testing.assert_array_equal(a, b)


def test_estimation_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        KneserNeyModel.estimate(np.array([1, 2, 9]), 5, 2)
    with pytest.raises(ConfigError, match="non-empty"):
        KneserNeyModel.estimate(np.array([], dtype=np.int64), 5, 2)
    with pytest.raises(ConfigError, match="order"):
        KneserNeyModel.estimate(np.array([1, 2]), 5, 0)
    with pytest.raises(ConfigError, match="integers"):
        KneserNeyModel.estimate(np.array([1.0, 2.0]), 5, 2)


def test_sorted_lookups_match_plain_binary_search() -> None:
    """The packed-sort paths (large query batches, keys with positions) against numpy's own answers."""
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 1 << 40, size=40_000))
    q = np.concatenate([keys[rng.integers(0, len(keys), 30_000)], rng.integers(0, 1 << 40, size=10_000)])
    pos = np.searchsorted(keys, q).clip(max=len(keys) - 1)
    np.testing.assert_array_equal(ngram_estimate.find(keys, q), np.where(keys[pos] == q, pos, -1))
    for big in (False, True):  # values too large to pack with their positions fall back to argsort
        values = rng.integers(0, 1 << 62 if big else 1 << 30, size=1000)
        order = rng.permutation(1000)
        sorted_values, moved = ngram_estimate.sort_by_key(values.copy(), order)
        np.testing.assert_array_equal(sorted_values, np.sort(values))
        np.testing.assert_array_equal(values[np.argsort(order)][moved], sorted_values)


# ------------------------------------------------------------------ the engine's interface
@pytest.fixture(scope="module")
def char_model(char_data) -> KneserNeyModel:
    tok, ids = char_data
    return KneserNeyModel.estimate(ids, tok.vocab_size, 4)


def test_forward_step_and_token_logprobs_agree(char_model: KneserNeyModel, char_data) -> None:
    tok, ids = char_data
    x = torch.from_numpy(ids[100:163].astype(np.int64)).reshape(3, 21)  # (B, T)
    x[1, 4] = 0  # an <unk> in the middle of a row
    fwd = char_model(x)  # (B, T, V)
    logits, state = fwd.logits, fwd.state
    assert logits.shape == (3, 21, tok.vocab_size) and logits.dtype == torch.float32
    fwd = char_model(x[:, :8])
    a, s1 = fwd.logits, fwd.state  # the same rows in two calls, state carried
    fwd = char_model(x[:, 8:], s1)
    b, s2 = fwd.logits, fwd.state
    torch.testing.assert_close(torch.cat([a, b], 1), logits, rtol=0, atol=0)
    assert torch.equal(s2[0], state[0]) and state[0].shape == (1, 3, 3)
    st = char_model.init_state(3)
    for t in range(x.size(1)):
        step_logits, st = char_model.step(x[:, t], st)  # (B, V)
        torch.testing.assert_close(step_logits, logits[:, t], rtol=0, atol=0)
    lp, s3 = char_model.token_logprobs(x[:, :-1], x[:, 1:])  # (B, T-1) float64
    assert lp.dtype == torch.float64
    torch.testing.assert_close(lp, logits[:, :-1].gather(2, x[:, 1:, None])[..., 0].double(), rtol=0, atol=1e-5)
    c1, s4 = char_model.token_logprobs(x[:, :9], x[:, 1:10])
    c2, _ = char_model.token_logprobs(x[:, 9:-1], x[:, 10:], s4)
    torch.testing.assert_close(torch.cat([c1, c2], 1), lp, rtol=0, atol=1e-12)
    seq, _ = char_model.sequence_logprobs(x)
    torch.testing.assert_close(seq[:, 1:], lp, rtol=0, atol=1e-12)
    assert torch.equal(char_model.advance(x[:, :-1])[0], s3[0])


def test_state_is_batch_on_dim_one_and_reorders(char_model: KneserNeyModel) -> None:
    x = torch.tensor([[5, 6, 7], [8, 9, 10]])
    state = char_model(x).state
    swapped = tuple(s.index_select(1, torch.tensor([1, 0, 0])) for s in state)  # what beam search does
    logits, _ = char_model.step(torch.tensor([3, 3, 3]), swapped)
    alone, _ = char_model.step(torch.tensor([3]), tuple(s.index_select(1, torch.tensor([1])) for s in state))
    torch.testing.assert_close(logits[0], alone[0], rtol=0, atol=0)
    torch.testing.assert_close(logits[1], logits[2], rtol=0, atol=0)


def test_behaves_like_a_module(char_model: KneserNeyModel) -> None:
    assert list(char_model.parameters()) == [] and char_model.state_dict() == {}
    assert char_model.eval() is char_model and not char_model.training
    assert char_model.to("cpu").device == torch.device("cpu")
    assert char_model.config.vocab_size == char_model.vocab_size and char_model.config.order == 4


def test_engine_generates_and_scores_with_it(char_model: KneserNeyModel, char_data) -> None:
    tok, ids = char_data
    greedy = generate(char_model, tok, "ROMEO:", DecodingOptions(strategy="greedy", max_new_tokens=12))[0]
    prompt = torch.tensor([tok.encode("\nROMEO:")])
    logits = char_model(prompt).logits
    assert greedy.ids[0] == int(logits[0, -1].argmax())
    beams = generate(char_model, tok, "ROMEO:", DecodingOptions(strategy="beam", beam_width=4, max_new_tokens=8))
    assert len(beams) == 4 and beams[0].score >= beams[-1].score
    stream = torch.from_numpy(ids[:500].astype(np.int64))
    nll = score_stream(char_model, stream).nll  # the recurrent model's evaluation path
    lp, _ = char_model.token_logprobs(stream[None, :-1], stream[None, 1:])
    assert nll == pytest.approx(-float(lp.sum()), rel=1e-6)


# ------------------------------------------------------------------ ARPA
def read_arpa_plainly(path: Path) -> dict[int, list[tuple[float, tuple[str, ...], float | None]]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    sections, k = {}, None
    for line in lines:
        if line.startswith("\\") and line.endswith("-grams:"):
            k = int(line[1:].split("-")[0])
            sections[k] = []
        elif k is not None and line and line != "\\end\\":
            fields = line.split("\t")
            backoff = float(fields[2]) if len(fields) == 3 else None
            sections[k].append((float(fields[0]), tuple(fields[1].split(" ")), backoff))
    return sections


@pytest.fixture(scope="module")
def small_word_model(word_data) -> tuple[KneserNeyModel, list[str]]:
    tok, train, _ = word_data
    return KneserNeyModel.estimate(train[:3000], tok.vocab_size, 3), token_names(tok)


def test_arpa_probabilities_are_the_models_scores(small_word_model, tmp_path: Path) -> None:
    model, names = small_word_model
    path = tmp_path / "m.arpa"
    model.to_arpa(path, names)
    sections = read_arpa_plainly(path)
    index = {n: i for i, n in enumerate(names)}
    assert [len(sections[k]) for k in (1, 2, 3)] == [model.vocab_size + 2, *model.num_ngrams[1:]]
    assert {w for _, (w,), _ in sections[1]} == set(names) | {"<s>", "</s>"}
    for k in (1, 2, 3):
        rows = [(p, g, b) for p, g, b in sections[k] if g[0] not in ("<s>", "</s>")]
        ctx = [tuple(index[w] for w in g[:-1]) for _, g, _ in rows]
        ids = torch.tensor([[index[g[-1]]] for _, g, _ in rows])
        lp, _ = model.sequence_logprobs(ids, state_of(model, ctx))  # p(w | ctx) from the model itself
        np.testing.assert_allclose(lp[:, 0].numpy() / LN10, [p for p, _, _ in rows], rtol=0, atol=1e-8)
    # a stored context's backoff is log10 p(w | c) - log10 p(w | c without its first token), for w never after c
    trigrams = {g for _, g, _ in sections[3]}
    followed = {t[:2] for t in trigrams}
    contexts = [(g, b) for _, g, b in sections[2] if g in followed][:50]
    assert len(contexts) == 50
    ctx = [tuple(index[t] for t in g) for g, _ in contexts]
    unseen = [next(i for i in range(model.vocab_size) if g + (names[i],) not in trigrams) for g, _ in contexts]
    ids = torch.tensor(unseen * 2)[:, None]
    lp, _ = model.sequence_logprobs(ids, state_of(model, ctx + [c[1:] for c in ctx]))  # p(w | c), p(w | c')
    np.testing.assert_allclose((lp[:50, 0] - lp[50:, 0]).numpy() / LN10, [b for _, b in contexts], rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", ["m.arpa", "m.arpa.gz"])
def test_arpa_round_trip(small_word_model, word_data, tmp_path: Path, name: str) -> None:
    model, names = small_word_model
    _, _, test = word_data
    path = tmp_path / name
    model.to_arpa(path, names)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # the temp file is gone
    loaded = KneserNeyModel.from_arpa(path, names)
    assert loaded.order == 3 and loaded.num_ngrams == model.num_ngrams
    x = torch.from_numpy(test[None, :2000])
    a, _ = model.sequence_logprobs(x)
    b, _ = loaded.sequence_logprobs(x)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-7)
    histories = [tuple(test[i : i + 2].tolist()) for i in range(0, 200, 20)] + [(), (0,), (0, 0)]
    np.testing.assert_allclose(probs_after(loaded, histories).sum(1), 1.0, atol=1e-6)


def test_arpa_of_an_order_one_model(tmp_path: Path) -> None:
    model = KneserNeyModel.estimate(np.array([1, 2, 2, 3, 3, 3]), 5, 1)
    names = ["<unk>", "a", "b", "c", "d"]
    model.to_arpa(tmp_path / "u.arpa", names)
    text = (tmp_path / "u.arpa").read_text()
    first = text.split("\\1-grams:\n")[1].splitlines()[0]
    assert first.count("\t") == 1  # the highest order has no backoff column
    loaded = KneserNeyModel.from_arpa(tmp_path / "u.arpa", names)
    np.testing.assert_allclose(probs_after(loaded, [()]), probs_after(model, [()]), atol=1e-9)


def corrupt(text: str, rare: str) -> dict[str, str]:
    """Broken variants of a good ARPA file, each a way a file gets damaged or mixed up."""
    lines = text.split("\n")
    first2 = lines.index("\\2-grams:") + 1
    first3 = lines.index("\\3-grams:") + 1
    prob, words, backoff = lines[first2].split("\t")
    prob3, words3 = lines[first3].split("\t")

    def variant(i: int, line: str) -> str:
        return "\n".join(lines[:i] + [line] + lines[i + 1 :])

    n3 = next(line for line in lines if line.startswith("ngram 3="))
    duplicate = "\n".join(lines[:first3] + [lines[first3]] + lines[first3:]).replace(n3, f"ngram 3={int(n3[8:]) + 1}")
    return {
        "truncated": text[: len(text) // 2],
        "no end": text.replace("\\end\\", ""),
        "empty": "",
        "not arpa": "hello world\n",
        "bad probability": variant(first2, f"abc\t{words}\t{backoff}"),
        "nan": variant(first2, f"nan\t{words}\t{backoff}"),
        "unknown token": variant(first2, f"{prob}\tzzz-unknown {words.split(' ')[1]}\t{backoff}"),
        "too few fields": variant(first2, f"{prob}\t{words.split(' ')[0]}"),
        "wrong count": text.replace("ngram 2=", "ngram 2=1", 1),
        "duplicate": duplicate,
        "no prefix": variant(first3, f"{prob3}\t{rare} {rare} {words3.split(' ')[2]}"),
    }


def test_malformed_arpa_is_a_checkpoint_error(small_word_model, tmp_path: Path) -> None:
    model, names = small_word_model
    good = tmp_path / "good.arpa"
    model.to_arpa(good, names)
    for what, text in corrupt(good.read_text(encoding="utf-8"), rare=names[-1]).items():
        path = tmp_path / f"{what.replace(' ', '_')}.arpa"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(CheckpointError) as err:
            KneserNeyModel.from_arpa(path, names)
        assert str(path) in str(err.value) and "\n" not in str(err.value), what
    gz = tmp_path / "m.arpa.gz"
    model.to_arpa(gz, names)
    (tmp_path / "cut.arpa.gz").write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.arpa.gz"):
        KneserNeyModel.from_arpa(tmp_path / "cut.arpa.gz", names)
    with pytest.raises(CheckpointError, match="missing.arpa"):
        KneserNeyModel.from_arpa(tmp_path / "missing.arpa", names)
    with pytest.raises(CheckpointError, match="no unigram"):  # a vocabulary the file was not made for
        KneserNeyModel.from_arpa(good, names + ["zzz-not-in-the-file"])


def test_writing_into_a_missing_directory_is_a_checkpoint_error(small_word_model, tmp_path: Path) -> None:
    model, names = small_word_model
    with pytest.raises(CheckpointError, match="cannot write"):
        model.to_arpa(tmp_path / "no" / "such" / "m.arpa", names)
    with pytest.raises(ConfigError, match="token name"):
        model.to_arpa(tmp_path / "m.arpa", ["a b"] + names[1:])


# ------------------------------------------------------------------ token names
def test_token_names_escape_whitespace_and_controls() -> None:
    tok = fit_tokenizer("char", "ab c\td\ne\x00f\u00a0<x\u2028")
    names = token_names(tok)
    by_surface = {tok.decode([i]): n for i, n in enumerate(names) if i}
    assert names[0] == "<unk>"
    assert by_surface[" "] == "<U+0020>" and by_surface["\n"] == "<U+000A>" and by_surface["\t"] == "<U+0009>"
    assert by_surface["\x00"] == "<U+0000>" and by_surface["\u00a0"] == "<U+00A0>"
    assert by_surface["\u2028"] == "<U+2028>"
    assert by_surface["<"] == "<" and by_surface["a"] == "a"
    assert_arpa_safe(names)


def test_word_token_names_cannot_pose_as_specials_or_escapes() -> None:
    tok = fit_tokenizer("word", "<s> </s> <U+000A> <id:5> x\nx y\n")
    names = token_names(tok)
    assert names[:2] == ["<unk>", "<eos>"]
    escaped = {tok.decode([i]): n for i, n in enumerate(names) if i > 1}
    assert escaped == {
        "<s>": "<U+003C>s>",
        "</s>": "<U+003C>/s>",
        "<U+000A>": "<U+003C>U+000A>",
        "<id:5>": "<U+003C>id:5>",
        "x": "x",
        "y": "y",
    }
    assert_arpa_safe(names)


def test_subword_token_names_are_unique() -> None:
    text = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:5000]
    tok = fit_tokenizer("subword", text, vocab_size=400)
    names = token_names(tok)
    assert names[0] == "<unk>" and any(n.startswith("<id:") for n in names)  # byte pieces that repeat a surface
    assert names[tok.encode("\n")[0]] == "<U+000A>"
    assert_arpa_safe(names)


def assert_arpa_safe(names: list[str]) -> None:
    assert len(set(names)) == len(names)
    assert all(n and not any(c.isspace() for c in n) and n not in ("<s>", "</s>") for n in names)


# ------------------------------------------------------------------ KenLM
@pytest.mark.parametrize("order", [3, 5])
def test_kenlm_reads_our_arpa_the_same_way(order: int, word_data, char_data, tmp_path: Path) -> None:
    kenlm = pytest.importorskip("kenlm", reason="kenlm is an optional extra: pip install 'charlm[kenlm]'")
    for tok, train, test in (word_data, (*char_data, char_data[1][-3000:])):
        model = KneserNeyModel.estimate(train, tok.vocab_size, order)
        names = token_names(tok)
        path = tmp_path / f"{tok.kind}{order}.arpa"
        model.to_arpa(path, names)
        lm = kenlm.Model(str(path))
        assert lm.order == order
        for start in range(0, 2000, 200):
            seq = np.asarray(test[start : start + 60], dtype=np.int64)
            ours, _ = model.sequence_logprobs(torch.from_numpy(seq)[None])  # from the empty history
            sentence = " ".join(names[i] for i in seq)
            per_token = [p for p, _, _ in lm.full_scores(sentence, bos=False, eos=False)]
            np.testing.assert_allclose(ours[0].numpy() / LN10, per_token, rtol=0, atol=1e-4)
            assert lm.score(sentence, bos=False, eos=False) == pytest.approx(float(ours.sum()) / LN10, abs=1e-4)
