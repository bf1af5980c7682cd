"""The perplexity metric: exact against hand-computed sums, parallel against its layout,
streaming against whole-text evaluation, the figures against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.data import token_safe_pieces
from charlm.data.tokenizers import fit_tokenizer
from charlm.errors import CorpusError
from charlm.evaluation import (
    TextScore,
    choose_weight,
    evaluate_file,
    evaluate_text,
    score_stream,
    stream_logprobs,
    total,
)
from charlm.evaluation import scoring as ev
from charlm.evaluation.mixture import MixtureScorer
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.runtime.devices import cpu_bf16_supported

LN2 = math.log(2.0)


def tiny(vocab: int = 7, cell: str = "lstm", seed: int = 0, **kw) -> RNNLanguageModel:
    torch.manual_seed(seed)
    opts = dict(vocab_size=vocab, cell=cell, num_layers=2, hidden_size=8, emb_size=4) | kw
    return RNNLanguageModel(ModelConfig(**opts)).eval()


def uniform(model: RNNLanguageModel) -> RNNLanguageModel:
    """Zero decoder: every prediction is uniform over the vocabulary."""
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    return model


def hand_nll(model: RNNLanguageModel, ids: list[int], state=None) -> float:
    """Sum of -log p(ids[t] | ids[:t]) for t >= 1, one token at a time through forward."""
    total_nll = 0.0
    with torch.no_grad():
        for prev, nxt in zip(ids[:-1], ids[1:]):
            fwd = model(torch.tensor([[prev]]), state)  # (1, 1, V)
            logits, state = fwd.logits, fwd.state
            total_nll -= F.log_softmax(logits[0, 0].double(), -1)[nxt].item()
    return total_nll


def trained_char_model(text: str, steps: int = 60, seed: int = 0):
    """A small char LSTM fitted for a few dozen Adam steps, so that context matters."""
    tok = fit_tokenizer("char", text)
    torch.manual_seed(seed)
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, num_layers=1, hidden_size=48, emb_size=16))
    ids = torch.as_tensor(np.asarray(tok.encode_array(text), dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    B, T = 8, 48
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - T - 1, (B,), generator=g)
        x = torch.stack([ids[s : s + T] for s in starts])  # (B, T)
        y = torch.stack([ids[s + 1 : s + T + 1] for s in starts])  # (B, T)
        logits = model(x).logits
        loss = F.cross_entropy(logits.reshape(-1, tok.vocab_size), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


TEXT = (
    "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met on a mat.\nthe end of the tale is near.\n"
) * 12


@pytest.fixture(scope="module")
def trained():
    return trained_char_model(TEXT)


# ------------------------------------------------------------------ score_stream
@pytest.mark.parametrize("streams", [1, 4])
def test_uniform_model_scores_log_vocab_per_token(streams):
    model = uniform(tiny(vocab=11))
    ids = torch.randint(0, 11, (301,))
    out = score_stream(model, ids, streams=streams, window=16, warmup=8)
    assert out.tokens == 300
    assert out.perplexity == pytest.approx(11.0, rel=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_exact_equals_hand_computed_sum_of_log_probs(cell):
    model = tiny(cell=cell)
    ids = torch.randint(0, 7, (40,), generator=torch.Generator().manual_seed(1))
    out = score_stream(model, ids, streams=1, window=7)
    assert out.tokens == 39
    assert out.nll == pytest.approx(hand_nll(model, ids.tolist()), rel=1e-5)


def naive_parallel(model, ids: list[int], streams: int, warmup: int) -> float:
    """The parallel layout written out by hand: a prefix row, then S rows, rows >= 1 warmed."""
    m = len(ids) - 1
    s = max(1, min(streams, m // warmup))
    seg, r = m // s, m - s * (m // s)
    nll = 0.0
    state = None
    if r:
        nll += hand_nll(model, ids[: r + 1])
        with torch.no_grad():
            state = model(torch.tensor([ids[:r]])).state
    for row in range(s):
        start = r + row * seg
        if row == 0:
            nll += hand_nll(model, ids[start : start + seg + 1], state)
        else:
            with torch.no_grad():
                warm = model(torch.tensor([ids[start - warmup : start]])).state
            nll += hand_nll(model, ids[start : start + seg + 1], warm)
    return nll


@pytest.mark.parametrize("n", [41, 44])  # with and without a remainder before the rows
def test_parallel_equals_its_layout_written_out(n):
    model = tiny()
    ids = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(2))
    out = score_stream(model, ids, streams=4, window=5, warmup=6)
    assert out.tokens == n - 1
    assert out.nll == pytest.approx(naive_parallel(model, ids.tolist(), 4, 6), rel=1e-5)
    exact = score_stream(model, ids, streams=1)
    assert out.nll != pytest.approx(exact.nll, rel=1e-9)  # the rows really started from warmed states


@pytest.mark.parametrize("streams", [1, 3])
def test_pieces_overlapping_by_one_token_continue_the_stream(streams):
    model = tiny()
    ids = torch.randint(0, 7, (200,), generator=torch.Generator().manual_seed(3))
    first = score_stream(model, ids[:121], streams=streams, warmup=10)
    second = score_stream(model, ids[120:], streams=1, state=first.state)
    if streams == 1:
        assert first.nll + second.nll == pytest.approx(hand_nll(model, ids.tolist()), rel=1e-5)
    else:
        # the returned state is the last row's: the second piece continues that row's stream
        with torch.no_grad():
            warm = model(ids[None, 120 - 40 - 10 : 120 - 40]).state  # last row starts at 80, warmed on 70..79
            st = model(ids[None, 80:120], warm).state
        assert second.nll == pytest.approx(hand_nll(model, ids[120:].tolist(), st), rel=1e-5)


def test_score_stream_leaves_training_mode_as_it_was():
    model = tiny(dropout=0.5).train()
    ids = torch.randint(0, 7, (50,))
    a = score_stream(model, ids)
    b = score_stream(model, ids)
    assert a.nll == b.nll  # no dropout while scoring
    assert model.training


def test_short_stream_scores_nothing():
    out = score_stream(tiny(), torch.tensor([3]))
    assert out.tokens == 0 and math.isnan(out.loss)


# ------------------------------------------------------------------ texts and files
def test_every_token_is_scored_after_a_line_end(tiny_text):
    tok = fit_tokenizer("char", tiny_text)
    model = tiny(vocab=tok.vocab_size)
    text = "the cat\nsat."
    got = evaluate_text(model, tok, text, exact=True)
    nl = tok.encode("\n")[0]
    assert got.tokens == len(text)
    assert got.nll == pytest.approx(hand_nll(model, [nl] + tok.encode(text)), rel=1e-5)


def test_uniform_model_perplexity_is_vocabulary_size(tiny_text):
    tok = fit_tokenizer("char", tiny_text)
    model = uniform(tiny(vocab=tok.vocab_size))
    for exact in (True, False):
        got = evaluate_text(model, tok, tiny_text, exact=exact, streams=4, warmup=16, segment=64)
        assert got.perplexity == pytest.approx(tok.vocab_size, rel=1e-6)
        assert got.bits_per_char == pytest.approx(math.log2(tok.vocab_size), rel=1e-6)


def test_bits_per_char_and_byte_follow_from_nll_and_counts():
    text = "naïve café — 日本語 😀\nçà et là\n" * 3
    tok = fit_tokenizer("char", text)
    model = tiny(vocab=tok.vocab_size)
    got = evaluate_text(model, tok, text, exact=True)
    assert got.chars == len(text) == got.tokens
    assert got.bytes == len(text.encode("utf-8")) > got.chars  # multi-byte characters
    assert got.bits_per_char == pytest.approx(got.nll / LN2 / len(text))
    assert got.bits_per_byte == pytest.approx(got.nll / LN2 / len(text.encode("utf-8")))
    assert got.bits_per_byte < got.bits_per_char
    assert got.perplexity == pytest.approx(math.exp(got.nll / got.tokens))


def test_default_agrees_with_exact_within_half_a_percent(trained, tiny_corpus):
    model, tok = trained
    text = tiny_corpus.read_text(encoding="utf-8") * 2
    exact = evaluate_text(model, tok, text, exact=True)
    split = evaluate_text(model, tok, text, streams=8, warmup=32, segment=128)
    uniform_loss = math.log(tok.vocab_size)
    assert exact.loss < 0.8 * uniform_loss  # the model has learned something; agreement is not trivial
    assert split.nll != exact.nll  # really split into warmed streams
    assert split.loss == pytest.approx(exact.loss, rel=0.005)
    cold = score_stream(model, torch.as_tensor(tok.encode(text)), streams=64, warmup=1)
    # the warm-up is what makes it agree: streams started (almost) cold miss the 0.5% bar
    assert abs(cold.loss / exact.loss - 1) > 0.005 > abs(split.loss / exact.loss - 1)


@pytest.mark.parametrize("exact", [True, False])
def test_chunked_file_equals_whole_text(tmp_path, trained, exact):
    model, tok = trained
    text = TEXT * 3
    path = tmp_path / "f.txt"
    path.write_text(text, encoding="utf-8")
    kw = dict(exact=exact, streams=4, warmup=16, segment=100)
    whole = evaluate_text(model, tok, text, **kw)
    seen: list[int] = []
    chunked = evaluate_file(model, tok, path, chunk_bytes=97, progress=seen.append, **kw)
    assert chunked.tokens == whole.tokens == len(text)
    assert chunked.nll == pytest.approx(whole.nll, rel=1e-9)
    assert len(seen) > 10 and sum(seen) == len(text.encode())
    if not exact:
        assert ev.StreamScorer(model, 0, ev.Scoring(streams=4, window=8, warmup=16, segment=100)).block < len(text)


def test_totals_are_token_weighted_not_a_mean_of_means(tmp_path, trained):
    model, tok = trained
    short, long = "the cat sat.\n", TEXT * 2
    scores = [evaluate_text(model, tok, t, exact=True) for t in (short, long)]
    both = total(scores)
    assert both.tokens == len(short) + len(long)
    assert both.loss == pytest.approx((scores[0].nll + scores[1].nll) / both.tokens)
    assert both.bits_per_char == pytest.approx((scores[0].nll + scores[1].nll) / LN2 / (len(short) + len(long)))
    mean_of_means = (scores[0].loss + scores[1].loss) / 2
    assert abs(both.loss - mean_of_means) > 1e-3  # the two really differ on files of different lengths


def test_unseen_characters_are_counted_and_scored_as_unk(tiny_text):
    tok = fit_tokenizer("char", tiny_text)
    model = tiny(vocab=tok.vocab_size)
    got = evaluate_text(model, tok, "the cat ßat ön €he mat.\n", exact=True)
    assert got.oov == 3 and got.tokens == 24
    assert got.unknown == ("ß", "ö", "€")
    assert got.oov_rate == pytest.approx(3 / 24)
    # scored, not skipped: any other unseen characters in the same places give the same figure
    same = evaluate_text(model, tok, "the cat #at ~n |he mat.\n", exact=True)
    assert same.oov == 3 and same.nll == pytest.approx(got.nll)
    known = evaluate_text(model, tok, "the cat sat on the mat.\n", exact=True)
    assert known.oov == 0 and known.nll != pytest.approx(got.nll)


def test_word_kind_counts_oov_and_scores_line_ends(tmp_path):
    text = "the cat sat on the mat\nthe dog sat on the log\n" * 5
    tok = fit_tokenizer("word", text)
    model = tiny(vocab=tok.vocab_size)
    probe = "the zebra sat on the sofa\nthe cat sat\n"
    got = evaluate_text(model, tok, probe, exact=True)
    assert got.tokens == 11  # 9 words + 2 <eos>
    assert got.oov == 2
    ids = [tok.eos_id] + list(tok.encode(probe))
    assert got.nll == pytest.approx(hand_nll(model, ids), rel=1e-5)


def test_literal_unk_in_a_word_corpus_is_not_out_of_vocabulary():
    tok = fit_tokenizer("word", "the <unk> sat on the mat\n" * 3)
    model = tiny(vocab=tok.vocab_size)
    got = evaluate_text(model, tok, "the <unk> sat on a <unk>\n", exact=True)
    assert got.tokens == 7 and got.oov == 1  # only "a"; the literal <unk> tokens are vocabulary
    assert got.unknown == ("a",)


@pytest.mark.parametrize("kind", ["word", "subword"])
def test_word_and_subword_chunks_never_split_a_token(tmp_path, kind, tiny_text):
    opts = {"vocab_size": 300} if kind == "subword" else {}
    tok = fit_tokenizer(kind, tiny_text, **opts)
    model = tiny(vocab=tok.vocab_size)
    path = tmp_path / "w.txt"
    path.write_text(tiny_text, encoding="utf-8")
    whole = evaluate_text(model, tok, tiny_text, exact=True)
    chunked = evaluate_file(model, tok, path, exact=True, chunk_bytes=7)
    assert chunked.tokens == whole.tokens == len(tok.encode(tiny_text))
    assert chunked.nll == pytest.approx(whole.nll, rel=1e-9)


def test_token_safe_pieces_end_at_token_boundaries():
    chunks = ["ab", "c\nde", "f gh", "\n", "ij\nk", "l"]
    pieces = list(token_safe_pieces(chunks, "word"))
    assert "".join(pieces) == "".join(chunks)
    assert all(p.endswith(("\n", " ")) for p in pieces[:-1])
    assert pieces == ["abc\n", "def ", "gh\n", "ij\n", "kl"]  # word tokens never span a space either
    sub = list(token_safe_pieces(chunks, "subword"))
    assert sub == ["abc\n", "def gh\n", "ij\n", "kl"]  # a subword piece may hold a space
    assert list(token_safe_pieces(chunks, "char")) == chunks


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab c\n\t<unk>é")), max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=6),
)
def test_pieces_encode_like_the_whole_text(text, cuts):
    chunks = [text[i:j] for i, j in zip([0, *sorted(cuts)], [*sorted(cuts), len(text)])]
    for tok in PIECE_TOKENIZERS:
        pieces = list(token_safe_pieces(chunks, tok.kind))
        assert "".join(pieces) == text
        assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)


PIECE_TOKENIZERS = [
    fit_tokenizer("word", "a b <unk>\nc é\n"),
    fit_tokenizer("word", "a b, c.\n", pretokenize="punct"),
    fit_tokenizer("subword", "ab abc cab\nbaa c\n" * 20, vocab_size=270),
]


@pytest.mark.skipif(not cpu_bf16_supported("lstm"), reason="this CPU has no bf16 LSTM kernel in torch (no AVX-512)")
def test_amp_autocast_scores_close_to_fp32():
    model = tiny()
    ids = torch.randint(0, 7, (300,), generator=torch.Generator().manual_seed(4))
    a = score_stream(model, ids, streams=4, warmup=16)
    b = score_stream(model, ids, streams=4, warmup=16, amp_dtype=torch.bfloat16)
    assert b.loss == pytest.approx(a.loss, rel=1e-2)


def test_streaming_memory_is_bounded_by_the_block(trained):
    model, tok = trained
    scorer = ev.StreamScorer(model, 0, ev.Scoring(streams=4, window=8, warmup=8, segment=16))
    peak = 0
    for _ in range(200):
        scorer.feed(np.ones(10, dtype=np.int64))
        peak = max(peak, scorer.n_pending)
    nll, tokens = scorer.finish()
    assert tokens == 2000
    assert peak <= scorer.block + 10  # the pending ids never grow with the stream


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "content, match",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"\xef\xbb\xbf", "empty"),
        (b"abc\x00\x01def", "binary"),
        (b"abc \xff\xfe def\n", "UTF-8"),
    ],
)
def test_bad_files_raise_corpus_error(tmp_path, trained, content, match):
    model, tok = trained
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=match):
        evaluate_file(model, tok, path)


def test_invalid_utf8_replaced_on_request_is_scored(tmp_path, trained):
    model, tok = trained
    path = tmp_path / "latin1.txt"
    path.write_bytes("the caf\xe9 sat.\n".encode("latin-1"))
    got = evaluate_file(model, tok, path, errors="replace")
    assert got.chars == 14 and got.oov == 1  # U+FFFD is a character the model never saw
    assert got.bytes == len("the caf\ufffd sat.\n".encode())


def test_whitespace_only_word_text_has_nothing_to_score(trained):
    text = "a b\n"
    tok = fit_tokenizer("word", text)
    with pytest.raises(CorpusError, match="no tokens"):
        evaluate_text(tiny(vocab=tok.vocab_size), tok, "   ")


def test_text_score_adds_up():
    a, b = TextScore(3, 6.0, 4, 5, 1), TextScore(1, 2.0, 1, 1, 0)
    assert a + b == TextScore(4, 8.0, 5, 6, 1) == total([a, b])
    assert total([]).tokens == 0 and math.isnan(total([]).perplexity)
    d = (a + b).to_dict()
    assert d["loss"] == 2.0 and d["oov_rate"] == 0.25 and d["bits_per_byte"] == pytest.approx(8 / LN2 / 6)


def test_sampled_validation_equals_its_segments_scored_by_hand():
    """evaluate_ids with a cap: the first segment from the line start, the others each warmed on the tokens before."""
    model = tiny()
    ids = torch.randint(0, 7, (2000,), generator=torch.Generator().manual_seed(5)).numpy().astype(np.uint8)
    nll, n = ev.sampled_nll(model, ids, 3, 300, ev.Scoring(segment=100, warmup=20))
    assert n == 300
    full = np.concatenate([[3], ids]).astype(np.int64)  # the context, then the stream
    starts = [0, *np.linspace(21, len(ids) - 100, 2).round().astype(int)]
    expected = 0.0
    with torch.no_grad():
        for t in starts:
            warm = torch.from_numpy(full[max(0, t - 20) : t])[None]
            state = model(warm).state if t else None
            logits = model(torch.from_numpy(full[t : t + 100])[None], state).logits
            expected += F.cross_entropy(logits[0].double(), torch.from_numpy(full[t + 1 : t + 101])).item() * 100
    assert nll == pytest.approx(expected, rel=1e-5)
    whole = ev.evaluate_ids(model, ids, 3, chars=2000, nbytes=2000, oov=0, exact=True)
    capped = ev.evaluate_ids(model, ids, 3, chars=2000, nbytes=2000, oov=10, max_tokens=300, segment=100, warmup=20)
    assert whole.tokens == 2000 and capped.tokens == 300 and capped.chars == 300 and capped.oov == 2
    assert capped.nll == pytest.approx(nll)


# ------------------------------------------------------------------ two models mixed
def mixture_token_by_token(a, b, ids: list[int], weights: list[float]) -> list[float]:
    """The slow reference: both models step one token at a time from the zero state, and each token's
    mixture (1 - w) p_a + w p_b is taken from the two full distributions: [NLL of a, of b, of each mixture]."""
    sums = [0.0] * (2 + len(weights))
    sa = sb = None
    with torch.no_grad():
        for prev, nxt in zip(ids[:-1], ids[1:]):
            fa, fb = a(torch.tensor([[prev]]), sa), b(torch.tensor([[prev]]), sb)
            la, sa, lb, sb = fa.logits, fa.state, fb.logits, fb.state  # (1, 1, V)
            pa = F.softmax(la[0, 0].double(), -1)[nxt].item()
            pb = F.softmax(lb[0, 0].double(), -1)[nxt].item()
            for i, p in enumerate([pa, pb] + [(1 - w) * pa + w * pb for w in weights]):
                sums[i] -= math.log(p)
    return sums


def test_mixture_in_one_stream_equals_the_token_by_token_reference():
    a, b = tiny(seed=0), tiny(seed=1)
    ids = torch.randint(0, 7, (300,), generator=torch.Generator().manual_seed(5)).tolist()
    weights = [0.0, 0.3, 1.0]
    scorer = MixtureScorer(a, b, ids[0], weights)  # exact: one stream per model
    scorer.feed(np.array(ids[1:]))
    nll, tokens = scorer.finish()
    assert tokens == len(ids) - 1
    np.testing.assert_allclose(nll, mixture_token_by_token(a, b, ids, weights), rtol=1e-6)


@pytest.mark.parametrize("block", [None, 37])  # one block, or blocks that cut the rows anywhere
def test_parallel_mixture_columns_are_each_models_parallel_figure(block):
    a, b = tiny(seed=0), tiny(seed=1)
    ids = torch.randint(0, 7, (400,), generator=torch.Generator().manual_seed(6))
    scoring = ev.Scoring(streams=4, window=5, warmup=6, segment=20)
    scorer = MixtureScorer(a, b, int(ids[0]), [0.0, 0.5, 1.0], scoring)
    if block:
        scorer.block = block
    scorer.feed(ids[1:].numpy())
    nll, tokens = scorer.finish()
    for model, column in ((a, 0), (b, 1)):
        plain = ev.StreamScorer(model, int(ids[0]), scoring)
        if block:
            plain.block = block
        plain.feed(ids[1:].numpy())
        assert nll[column] == pytest.approx(plain.finish()[0], rel=1e-9)
    assert nll[2] == pytest.approx(nll[0], rel=1e-12) and nll[4] == pytest.approx(nll[1], rel=1e-12)
    assert nll[3] < 0.5 * (nll[0] + nll[1])  # Jensen: the mixture beats the mean of its parts' NLL


@pytest.mark.parametrize("streams", [1, 4])
def test_stream_logprobs_are_the_per_token_terms_of_score_stream(streams):
    model = tiny()
    ids = torch.randint(0, 7, (203,), generator=torch.Generator().manual_seed(7))
    lp, state = stream_logprobs(model, ids, streams=streams, window=5, warmup=6)
    out = score_stream(model, ids, streams=streams, window=5, warmup=6)
    assert lp.shape == (202,) and lp.dtype == torch.float64
    assert -float(lp.sum()) == pytest.approx(out.nll, rel=1e-9)
    assert all(torch.equal(s, t) for s, t in zip(state, out.state))
    if streams == 1:  # one stream: each term is the token's own log-probability
        for t in (0, 1, 100, 201):
            assert -float(lp[t]) == pytest.approx(
                hand_nll(model, ids[: t + 2].tolist()) - hand_nll(model, ids[: t + 1].tolist()), abs=1e-5
            )


def test_choose_weight_in_parallel_streams_picks_the_exact_weight():
    a, b = tiny(seed=0), tiny(seed=1)  # two different near-uniform guesses: the best mixture lies between
    ids = torch.randint(0, 7, (1500,), generator=torch.Generator().manual_seed(8)).numpy()
    w_exact, losses_exact = choose_weight(a, b, ids, 0)
    w_par, losses_par = choose_weight(a, b, ids, 0, streams=4, warmup=64, exact=False)
    assert w_par == w_exact and 0.0 < w_exact < 1.0
    np.testing.assert_allclose(losses_par, losses_exact, rtol=1e-3)
