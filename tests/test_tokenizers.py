"""Tokenizers: round trips, unk/eos, the vectorised path, persistence and errors, for each kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.data.corpus import read_corpus
from charlm.data.tokenizers import (
    CharTokenizer,
    SubwordTokenizer,
    Tokenizer,
    WordTokenizer,
    fit_tokenizer,
    fit_tokenizer_stream,
    id_dtype,
    load_tokenizer,
    token_safe_pieces,
    tokenizer_from_dict,
    wordtable,
)
from charlm.data.tokenizers import subword as subword_module
from charlm.data.tokenizers.wordscan import SPACES, scan_words
from charlm.data.tokenizers.wordtable import WordTable
from charlm.errors import TokenizerError

CORPORA = Path(__file__).parent.parent / "corpora"
FAST = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return read_corpus(CORPORA / "tinyshakespeare.txt")[:60_000]


@pytest.fixture(scope="module")
def char_tok(shakespeare) -> CharTokenizer:
    return fit_tokenizer("char", shakespeare)


@pytest.fixture(scope="module")
def word_tok(shakespeare) -> WordTokenizer:
    return fit_tokenizer("word", shakespeare)


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def subword_tok(request, shakespeare) -> SubwordTokenizer:
    return fit_tokenizer("subword", shakespeare, vocab_size=400, model_type=request.param)


@pytest.fixture(scope="module")
def all_toks(char_tok, word_tok, subword_tok) -> list[Tokenizer]:
    return [char_tok, word_tok, subword_tok]


# --------------------------------------------------------------------------- char


def test_char_vocabulary_is_unk_then_sorted_characters():
    tok = fit_tokenizer("char", "banana\n")
    assert tok.vocab_size == 5 and tok.unk_id == 0 and tok.eos_id is None
    assert tok.encode("\nabn") == [1, 2, 3, 4]
    assert tok.encode("bz") == [3, 0]  # z was never seen
    assert tok.decode([3, 0, 2]) == "b\ufffda"  # <unk> decodes to U+FFFD
    assert tok.unknown_units("zebra! zz!") == ["z", "e", "r", "!", " "]


@FAST
@given(data=st.data())
def test_char_round_trip_over_its_alphabet(char_tok, shakespeare, data):
    text = data.draw(st.text(alphabet=sorted(set(shakespeare))))
    ids = char_tok.encode(text)
    assert char_tok.decode(ids) == text
    assert 0 not in ids


@FAST
@given(text=st.text(), chunk=st.integers(1, 7))
def test_char_encode_array_equals_encode(char_tok, text, chunk):
    arr = char_tok.encode_array(text, chunk_chars=chunk)
    assert arr.dtype == np.uint8
    assert arr.tolist() == char_tok.encode(text)
    unknown = char_tok.unknown_units(text, chunk_chars=chunk)
    assert unknown == list(dict.fromkeys(c for c in text if c not in set(char_tok.to_dict()["chars"])))


def test_char_dtype_grows_with_the_vocabulary():
    big = "".join(map(chr, range(0x4E00, 0x4E00 + 300)))
    tok = fit_tokenizer("char", big)
    assert tok.vocab_size == 301
    assert tok.encode_array(big).dtype == np.uint16
    assert tok.decode(tok.encode_array(big)) == big


def test_id_dtype_is_the_smallest_that_holds_every_id():
    assert id_dtype(256) == np.uint8
    assert id_dtype(257) == np.uint16
    assert id_dtype(65536) == np.uint16
    assert id_dtype(65537) == np.uint32


# --------------------------------------------------------------------------- word


def test_word_specials_and_line_ends():
    tok = fit_tokenizer("word", "the cat\nthe dog\n")
    assert (tok.unk_id, tok.eos_id) == (0, 1)
    assert tok.to_dict()["vocab"] == ["<unk>", "<eos>", "the", "cat", "dog"]  # by frequency, then code point
    assert tok.encode("the cat\n\ndog") == [2, 3, 1, 1, 4]
    assert tok.decode([2, 3, 1, 1, 4, 1]) == "the cat\n\ndog\n"  # no space around a line end
    assert tok.encode("the  bird \t cat") == [2, 0, 3]
    assert tok.encode("the <eos> <unk>") == [2, 1, 0]  # literal specials take the special ids
    assert tok.unknown_units("a bird and a fish\nbird") == ["a", "bird", "and", "fish"]


def test_word_literal_unk_in_a_pretokenized_corpus_maps_to_unk():
    text = read_corpus(CORPORA / "wikitext-2.valid.txt")[:200_000]
    assert " <unk> " in text
    tok = fit_tokenizer("word", text)
    vocab = tok.to_dict()["vocab"]
    assert vocab.count("<unk>") == 1 and vocab[0] == "<unk>"
    ids = tok.encode("the <unk> of")
    assert ids[1] == tok.unk_id and 0 not in (ids[0], ids[2])
    assert tok.decode(ids) == "the <unk> of"
    assert "<unk>" not in tok.unknown_units(text)
    assert tok.unknown_units(text) == []  # every other word of the fitted text is known


def test_word_min_freq_and_max_size_keep_the_most_frequent():
    text = "c b a c b c d d d d"
    assert fit_tokenizer("word", text, min_freq=2).to_dict()["vocab"][2:] == ["d", "c", "b"]
    assert fit_tokenizer("word", text, max_size=4).to_dict()["vocab"][2:] == ["d", "c"]
    assert fit_tokenizer("word", "y x z").to_dict()["vocab"][2:] == ["x", "y", "z"]  # ties: code-point order
    assert fit_tokenizer("word", text, max_size=None, min_freq=None).vocab_size == 6  # None = default


def test_word_punct_splits_punctuation_and_normalises_spacing():
    tok = fit_tokenizer("word", "Hello, world! Don't stop.\n<unk> here", pretokenize="punct")
    assert tok.to_dict()["vocab"][2:] == ["!", ",", ".", "Don't", "Hello", "here", "stop", "world"]
    ids = tok.encode("Hello,world!\n<unk>")
    assert tok.decode(ids) == "Hello, world!\n<unk>"  # detokenized: no space before punctuation
    assert ids[-1] == tok.unk_id


@FAST
@given(data=st.data(), final_newline=st.booleans())
def test_word_round_trip_for_normalised_text(word_tok, data, final_newline):
    words = st.sampled_from(word_tok.to_dict()["vocab"][2:])
    lines = data.draw(st.lists(st.lists(words, max_size=6), max_size=6))
    text = "\n".join(" ".join(words) for words in lines) + ("\n" if final_newline and lines else "")
    ids = word_tok.encode(text)
    assert word_tok.decode(ids) == text
    assert ids.count(word_tok.eos_id) == text.count("\n")


_LONG = "x" * 300  # a word over 256 bytes: matched through the fast path's dict, not its hash table
_MESSY = [
    "the",
    "of",
    "lord",
    "zz",
    "<unk>",
    "<eos>",
    "<unk",
    "eos>",
    "<",
    ">",
    "\x00",
    " ",
    "  ",
    "\n",
    "\t",
    "\r",
    "\x1c",
    "\x1f",
    "\x85",
    "\xa0",
    "\u1680",
    "\u2009",
    "\u2028",
    "\u2029",
    "\u3000",
    "'",
    "s",
    "don't",
    "a'b'c",
    ",",
    "!",
    "_x9",
    "é",
    "中文",
    "😀",
    "\udc80",
    "—",
    _LONG,
    _LONG + "y",
    "abcdefgh",
    "abcdefghi",
    "the" * 6,
]


@pytest.fixture(scope="module")
def word_toks(shakespeare) -> dict[str, WordTokenizer]:
    extra = f" zz \x00 é 中文 😀 {_LONG} abcdefgh {'the' * 6} _x9 don't a'b "  # words of every length and script
    return {mode: fit_tokenizer("word", shakespeare + extra, pretokenize=mode) for mode in ("whitespace", "punct")}


def test_the_fast_path_knows_every_character_str_split_splits_on():
    assert "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()) == SPACES


@FAST
@given(
    text=st.lists(st.sampled_from(_MESSY)).map("".join),
    chunk=st.integers(1, 12),
    mode=st.sampled_from(["whitespace", "punct"]),
)
def test_word_encode_array_equals_encode(word_toks, text, chunk, mode):
    tok = word_toks[mode]
    arr, oov = tok.encode_with_oov(text, chunk_chars=chunk)
    assert arr.dtype == np.uint16
    expected = tok.encode(text)
    assert arr.tolist() == expected
    assert tok.encode_array(text, chunk_chars=chunk).tolist() == expected
    words = [w for line in text.split("\n") for w in tok._split(line)]
    assert oov == sum(w not in tok.to_dict()["vocab"] for w in words)  # a literal <unk> is a word, not OOV
    if "\n" in text:
        assert tok.eos_id in arr


@FAST
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(SPACES + "'<>")))
def test_word_encode_array_equals_encode_on_any_text(word_toks, text):
    for tok in word_toks.values():
        assert tok.encode_array(text).tolist() == tok.encode(text)


def test_word_fast_path_is_exact_when_every_word_hashes_alike(monkeypatch, word_toks, shakespeare):
    # all hashes equal: every lookup probes past other words, and only the byte comparison decides
    real = wordtable.hash_spans

    def all_alike(view, starts, lens):
        return np.zeros(len(starts), np.uint64), real(view, starts, lens)[1]

    monkeypatch.setattr(wordtable, "hash_spans", all_alike)
    for mode in ("whitespace", "punct"):
        tok = WordTokenizer(word_toks[mode].to_dict()["vocab"][:300], mode)
        text = shakespeare[:5000] + f" {_LONG} {_LONG}y abcdefghi abcdefgh"
        assert tok.encode_array(text).tolist() == tok.encode(text)


def test_word_table_grows_and_finds_every_word():
    table = WordTable()
    words = [f"w{i}".encode() * (i % 60 + 1) for i in range(3000)]  # 2 to 300 bytes: 1 to 32 blocks, and longer
    for start in range(0, len(words), 700):
        table.add(words[start : start + 700])
    spans = scan_words(b" ".join(words).decode(), punct=False)
    assert table.lookup(spans).tolist() == list(range(len(words)))
    assert table.find(words[2999]) == 2999
    assert table.find(b"absent") == -1 and table.find(words[5] + b"x") == -1


def test_word_fit_errors():
    with pytest.raises(TokenizerError, match="no words"):
        fit_tokenizer("word", " \n\t")
    with pytest.raises(TokenizerError, match="no word occurs 3 times"):
        fit_tokenizer("word", "a a b", min_freq=3)
    with pytest.raises(TokenizerError, match="min_freq"):
        fit_tokenizer("word", "a", min_freq=0)
    with pytest.raises(TokenizerError, match="at least 3"):
        fit_tokenizer("word", "a", max_size=2)
    with pytest.raises(TokenizerError, match="unknown pretokenize"):
        fit_tokenizer("word", "a", pretokenize="spacy")


# --------------------------------------------------------------------------- subword


@FAST
@given(text=st.text())
def test_subword_round_trip_is_exact_for_any_text(subword_tok, text):
    ids = subword_tok.encode(text)
    assert subword_tok.decode(ids) == text
    assert subword_tok.unk_id not in ids


_SPACEY = st.sampled_from([" ", "  ", "\t", "\n", "\n\n", "\r", "\u2581", "\u3000", "a", "the", "😀", "é", "\x00"])


@FAST
@given(parts=st.lists(_SPACEY), chunk=st.integers(1, 9))
def test_subword_whitespace_survives_and_encode_array_equals_encode(subword_tok, parts, chunk):
    text = "".join(parts)
    ids = subword_tok.encode(text)
    assert subword_tok.decode(ids) == text
    arr = subword_tok.encode_array(text, chunk_chars=chunk, batch_chunks=3)
    assert arr.dtype == np.uint16
    assert arr.tolist() == ids


def test_subword_properties(subword_tok, shakespeare):
    assert subword_tok.vocab_size == 400
    assert (subword_tok.unk_id, subword_tok.eos_id) == (0, None)
    assert subword_tok.unknown_units("never seen: \u4e2d\u6587") == []
    ids = subword_tok.encode(shakespeare[:2000])
    assert len(ids) < 0.8 * 2000  # it learned pieces longer than a character (~80 beyond the floor of 320)


def test_subword_tiny_corpus_and_vocab_limits():
    tok = fit_tokenizer("subword", "ab ab\n")
    assert 258 < tok.vocab_size < 1000  # fewer pieces than asked for: hard_vocab_limit is off
    assert tok.decode(tok.encode("xyz ba\n\t")) == "xyz ba\n\t"
    need = 258 + 3  # a, b and the space mark
    with pytest.raises(TokenizerError, match=f"too small.*need {need}; use --subword-vocab-size {need}"):
        fit_tokenizer("subword", "ab ab\n", vocab_size=need - 1)
    assert fit_tokenizer("subword", "ab ab\n", vocab_size=need).vocab_size <= need
    with pytest.raises(TokenizerError, match="unknown subword model"):
        fit_tokenizer("subword", "ab", model_type="wordpiece")
    with pytest.raises(TokenizerError, match="without characters"):
        fit_tokenizer("subword", "\n\n")


def test_subword_text_without_spaces_still_round_trips_spaces():
    tok = fit_tokenizer("subword", "abcabc\nabc", model_type="bpe")
    assert tok.decode(tok.encode("a b  c ")) == "a b  c "
    with pytest.raises(TokenizerError, match="need 262"):  # a, b, c and the space mark
        fit_tokenizer("subword", "abcabc", vocab_size=261)


def test_subword_rejects_a_lone_surrogate(subword_tok):
    with pytest.raises(TokenizerError, match="lone surrogate"):
        subword_tok.encode("a\ud800")


def test_subword_long_lines_are_trained_on():
    line = " ".join(["abracadabra"] * 2000)  # one 24,000-character line: longer than SentencePiece takes
    tok = fit_tokenizer("subword", line, vocab_size=340, model_type="bpe")
    assert len(tok.encode(" abracadabra")) <= 3


# --------------------------------------------------------------------------- streaming fit


def _cut(text: str, cuts: list[int]) -> list[str]:
    """`text` cut at the given positions (any order, repeats allowed): chunks joining to `text`."""
    bounds = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


@FAST
@given(text=st.text(), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_char_fit_on_chunks_equals_fit_on_the_text(text, cuts):
    if not text:
        with pytest.raises(TokenizerError, match="empty text"):
            fit_tokenizer_stream("char", _cut(text, cuts))
        return
    assert fit_tokenizer_stream("char", _cut(text, cuts)) == fit_tokenizer("char", text)
    assert fit_tokenizer("char", text).to_dict()["chars"] == sorted(set(text))


@pytest.fixture(scope="module")
def wiki() -> str:
    return read_corpus(CORPORA / "wikitext-2.valid.txt")[:30_000] + " don't stop , a'b'c <unk> é 中文\n"


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 40_000), max_size=8),
    mode=st.sampled_from(["whitespace", "punct"]),
    min_freq=st.sampled_from([None, 1, 3]),
    max_size=st.sampled_from([None, 3, 50]),
)
def test_word_fit_on_chunks_equals_fit_on_the_text(wiki, cuts, mode, min_freq, max_size):
    options = {"pretokenize": mode, "min_freq": min_freq, "max_size": max_size}
    streamed = fit_tokenizer_stream("word", _cut(wiki, cuts), **options)
    assert streamed == fit_tokenizer("word", wiki, **options)


def test_word_fit_equals_counting_with_str_split(wiki):
    words = wiki.split()
    counts = {w: words.count(w) for w in set(words) - {"<unk>", "<eos>"}}
    expected = sorted((w for w, n in counts.items() if n >= 2), key=lambda w: (-counts[w], w))
    assert fit_tokenizer("word", wiki, min_freq=2).to_dict()["vocab"] == ["<unk>", "<eos>", *expected]


def test_subword_fit_on_chunks_equals_fit_on_the_text(shakespeare, monkeypatch):
    text = shakespeare[:20_000]
    size = len(text.encode())
    whole = fit_tokenizer("subword", text, vocab_size=340)
    for cuts in ([], [1, 2, 9000], list(range(0, 20_000, 777))):
        assert fit_tokenizer_stream("subword", _cut(text, cuts), size=size, vocab_size=340) == whole
    # past MAX_SUBWORD_TRAIN_CHARS only every k-th line is trained on, k chosen from the size given
    monkeypatch.setattr(subword_module, "MAX_SUBWORD_TRAIN_CHARS", 5_000)
    sampled = fit_tokenizer("subword", text, vocab_size=340, model_type="bpe")
    assert sampled != fit_tokenizer("subword", text[:5000], vocab_size=340, model_type="bpe")
    streamed = fit_tokenizer_stream("subword", _cut(text, [3, 7000]), size=size, vocab_size=340, model_type="bpe")
    assert streamed == sampled
    with pytest.raises(ValueError, match="needs size"):
        fit_tokenizer_stream("subword", [text])


def test_subword_vocab_check_sees_characters_of_unsampled_lines(monkeypatch):
    monkeypatch.setattr(subword_module, "MAX_SUBWORD_TRAIN_CHARS", 10)
    text = "ab\n" * 20 + "c\n"  # every 7th line is sampled, so "c" is not; the check still counts it
    with pytest.raises(TokenizerError, match="need 262"):
        fit_tokenizer_stream("subword", [text], size=len(text), vocab_size=261)


@FAST
@given(
    parts=st.lists(st.sampled_from(["a", "bc", " ", "\n", "d e", "f\ng"]), max_size=12),
    kind=st.sampled_from(["char", "word", "subword"]),
)
def test_token_safe_pieces_join_to_the_chunks_and_cut_only_at_separators(parts, kind):
    pieces = list(token_safe_pieces(parts, kind))
    assert "".join(pieces) == "".join(parts)
    seps = {"char": None, "word": (" ", "\n"), "subword": ("\n",)}[kind]
    if seps:
        assert all(p.endswith(seps) for p in pieces[:-1])


# --------------------------------------------------------------------------- all kinds: persistence


def test_save_and_load_give_identical_encodings(all_toks, shakespeare, tmp_path):
    sample = shakespeare[-3000:] + "\nunseen \u4e2d \u2581 <unk>"
    for tok in all_toks:
        d = tmp_path / tok.kind
        tok.save(d)
        loaded = load_tokenizer(d)
        assert type(loaded) is type(tok) and loaded == tok
        assert loaded.encode(sample) == tok.encode(sample)
        assert loaded.decode(tok.encode(sample)) == tok.decode(tok.encode(sample))
        assert sorted(p.name for p in d.iterdir()) == (
            ["tokenizer.json", "tokenizer.model"] if tok.kind == "subword" else ["tokenizer.json"]
        )
        again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
        assert again.encode_array(sample).tolist() == tok.encode(sample)
        assert type(tok).from_dict(tok.to_dict()) == tok
        assert Tokenizer.from_dict(tok.to_dict()) == tok


def test_subword_json_refers_to_the_model_file(subword_tok, tmp_path):
    subword_tok.save(tmp_path)
    meta = json.loads((tmp_path / "tokenizer.json").read_text())
    assert "model" not in meta and meta["model_file"] == "tokenizer.model"
    assert "model" in subword_tok.to_dict()  # the dict form is self-contained (base64)
    assert (tmp_path / "tokenizer.model").read_bytes()[:2] != b""


def test_save_overwrites_and_leaves_no_temp_files(char_tok, word_tok, tmp_path):
    word_tok.save(tmp_path)
    char_tok.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]
    assert load_tokenizer(tmp_path) == char_tok
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "tokenizer.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_save_into_a_file_is_an_error(char_tok, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(TokenizerError, match="cannot save"):
        char_tok.save(tmp_path / "f")


def test_load_errors(char_tok, subword_tok, tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json in"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text("{ not json")
    with pytest.raises(TokenizerError, match="tokenizer.json is corrupt"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({**char_tok.to_dict(), "format": 2}))
    with pytest.raises(TokenizerError, match="format 2"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({**char_tok.to_dict(), "chars": ["b", "a"]}))
    with pytest.raises(TokenizerError, match="corrupt"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"format": 1, "kind": "word"}))
    with pytest.raises(TokenizerError, match="word tokenizer data is corrupt"):
        load_tokenizer(tmp_path)
    subword_tok.save(tmp_path / "sw")
    model = (tmp_path / "sw" / "tokenizer.model").read_bytes()
    (tmp_path / "sw" / "tokenizer.model").write_bytes(model[:-1] + bytes([model[-1] ^ 1]))
    with pytest.raises(TokenizerError, match="does not match tokenizer.json"):
        load_tokenizer(tmp_path / "sw")
    (tmp_path / "sw" / "tokenizer.model").unlink()
    with pytest.raises(TokenizerError, match="tokenizer.model is missing"):
        load_tokenizer(tmp_path / "sw")


def test_from_dict_errors(char_tok, word_tok, subword_tok):
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'bytes'"):
        tokenizer_from_dict({"format": 1, "kind": "bytes"})
    with pytest.raises(TokenizerError, match="not a JSON object"):
        tokenizer_from_dict([1, 2])
    with pytest.raises(TokenizerError, match="of kind 'word', not 'char'"):
        CharTokenizer.from_dict(word_tok.to_dict())
    with pytest.raises(TokenizerError, match="SentencePiece model is corrupt"):
        tokenizer_from_dict({**subword_tok.to_dict(), "model": "AAAA"})
    with pytest.raises(TokenizerError, match="not base64"):
        tokenizer_from_dict({**subword_tok.to_dict(), "model": "!!"})
    with pytest.raises(TokenizerError, match="vocab_size 7"):
        tokenizer_from_dict({**subword_tok.to_dict(), "vocab_size": 7})


# --------------------------------------------------------------------------- all kinds: decode input


def test_decode_rejects_ids_outside_the_vocabulary(all_toks):
    for tok in all_toks:
        v = tok.vocab_size
        with pytest.raises(TokenizerError, match=rf"id {v} is outside the vocabulary of {v} ids \(0\.\.{v - 1}\)"):
            tok.decode([1, v])
        with pytest.raises(TokenizerError, match="id -1 is outside"):
            tok.decode(np.array([-1, 2]))
        with pytest.raises(TokenizerError, match="integers"):
            tok.decode([1.5])
        with pytest.raises(TokenizerError, match="1-D"):
            tok.decode([[1, 2]])


def test_decode_accepts_lists_arrays_tensors_and_iterators(all_toks):
    torch = pytest.importorskip("torch")
    for tok in all_toks:
        ids = tok.encode("First Citizen:\nBefore we proceed")
        expected = tok.decode(ids)
        assert expected.startswith("First")
        assert tok.decode(np.asarray(ids, dtype=np.uint16)) == expected
        assert tok.decode(torch.tensor(ids)) == expected
        assert tok.decode(iter(ids)) == expected
        assert tok.decode([]) == ""


# --------------------------------------------------------------------------- dispatch


def test_fit_tokenizer_dispatch_and_option_errors():
    assert isinstance(fit_tokenizer("char", "ab"), CharTokenizer)
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'bpe'; choose char, word, subword"):
        fit_tokenizer("bpe", "ab")
    with pytest.raises(TokenizerError, match="option min_freq does not apply to the char tokenizer"):
        fit_tokenizer("char", "ab", min_freq=2)
    with pytest.raises(TokenizerError, match="empty text"):
        fit_tokenizer("char", "")


def test_tokenizers_and_corpus_do_not_import_torch():
    code = "import sys, charlm.data.tokenizers, charlm.data.corpus; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- word: punct detokenization


@pytest.mark.parametrize(
    "text",
    [
        'He said, "Go home." She didn\'t (really) go; well-known -- 1,000 or 3.5%!',
        "The dogs' bowls and 'quoted' words: [a] {b} \u201ccurly\u201d don\u2019t?",
        '"Yes," he said.\n\n"No!"',
    ],
)
def test_punct_words_decode_as_written_text(text):
    tok = fit_tokenizer("word", text, pretokenize="punct")
    assert tok.decode(tok.encode(text)) == text.replace(" -- ", "--")  # a spaced dash comes back unspaced


_DETOK = [
    "word",
    "ab",
    "12",
    "000",
    "'",
    '"',
    ",",
    ".",
    "-",
    "(",
    ")",
    "\u2019",
    "t",
    "<unk>",
    "<",
    ">",
    "!",
    " ",
    "\n",
]


@FAST
@given(pieces=st.lists(st.sampled_from(_DETOK) | st.text("ab1'\"-.,( \n\u2019<>", max_size=4), max_size=40))
def test_punct_decoding_re_encodes_to_the_same_tokens_and_streams(pieces):
    text = "".join(pieces)
    tok = fit_tokenizer("word", text + " word", pretokenize="punct")
    ids = tok.encode(text)
    decoded = tok.decode(ids)
    assert tok.encode(decoded) == ids  # detokenizing never joins two tokens into one
    for k in range(len(ids)):
        assert decoded.startswith(tok.decode(ids[:k]))  # a prefix of the ids decodes to a prefix of the text


def test_streamed_punct_words_concatenate_to_the_whole_decoding():
    from charlm.sampling.text import TextDecoder

    text = '"Well," said he, "I don\'t know - it\'s (maybe) 1,000 miles."\nThe dogs\' bowls.'
    tok = fit_tokenizer("word", text, pretokenize="punct")
    ids = tok.encode(text)
    decoder = TextDecoder(tok, ids[:2])
    streamed = "".join(decoder.push([i]) for i in ids[2:]) + decoder.flush()
    assert tok.decode(ids[:2]) + streamed == tok.decode(ids) == text.replace(" - ", "-")
