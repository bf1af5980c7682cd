"""The token cache: ids on disk built once, reused, checked on every open, rebuilt when anything is off."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from charlm.data.corpus import corpus_files, iter_corpus_chunks, read_corpus, split_offset
from charlm.data.tokcache import TokenizedCorpus, shard, tokenized_corpus
from charlm.data.tokcache import build as cache_build
from charlm.data.tokenizers import fit_tokenizer
from charlm.errors import ConfigError, CorpusError

CORPORA = Path(__file__).parent.parent / "corpora"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """60 kB of Shakespeare in a file of its own (tests change it)."""
    path = tmp_path / "shakes.txt"
    path.write_text(read_corpus(CORPORA / "tinyshakespeare.txt")[:60_000], encoding="utf-8")
    return path


@pytest.fixture
def fits(monkeypatch) -> list[str]:
    """The kinds fitted so far: a reused entry fits nothing."""
    calls: list[str] = []
    real = cache_build.fit_tokenizer_stream

    def counting(kind, chunks, **kw):
        calls.append(kind)
        return real(kind, chunks, **kw)

    monkeypatch.setattr(cache_build, "fit_tokenizer_stream", counting)
    return calls


def _parts(paths: list[Path], fraction: float) -> tuple[str, str]:
    """The training and validation text of a corpus split as the cache splits it."""
    files = corpus_files(paths)
    cut = split_offset(files, fraction)
    return "".join(iter_corpus_chunks(files, stop=cut)), "".join(iter_corpus_chunks(files, start=cut))


# --------------------------------------------------------------------------- build, then reuse


@pytest.mark.parametrize(
    "level, options",
    [("char", {}), ("word", {"pretokenize": "punct", "min_freq": 2}), ("subword", {"vocab_size": 400})],
)
def test_ids_equal_encoding_the_split_text_and_a_rerun_reuses_them(tmp_path, corpus, fits, level, options):
    events: list[tuple[str, int, int]] = []

    def cached() -> TokenizedCorpus:
        return tokenized_corpus(
            [corpus],
            level=level,
            tokenizer_options=options,
            cache_dir=tmp_path / "cache",
            progress=lambda *e: events.append(e),
        )

    tc = cached()
    train_text, valid_text = _parts([corpus], 0.1)
    assert train_text + valid_text == read_corpus(corpus) and train_text.endswith("\n")
    assert tc.tokenizer == fit_tokenizer(level, train_text, **options)  # fitted on the training part only
    assert isinstance(tc.train, np.memmap) and not tc.train.flags.writeable
    assert tc.train.dtype == tc.tokenizer.dtype
    assert np.array_equal(tc.train, tc.tokenizer.encode_array(train_text))
    assert np.array_equal(tc.valid, tc.tokenizer.encode_array(valid_text))
    assert (tc.valid_chars, tc.valid_bytes) == (len(valid_text), len(valid_text.encode()))
    assert not tc.reused and fits == [level]
    assert {e[0] for e in events} == {"fitting", "encoding"} and events[-1][1] == events[-1][2] == corpus.stat().st_size

    n_events = len(events)
    again = cached()
    assert again.reused and fits == [level] and len(events) == n_events  # no refit, no progress
    assert again.path == tc.path and again.tokenizer == tc.tokenizer
    assert (again.fingerprint, again.valid_fingerprint) == (tc.fingerprint, tc.valid_fingerprint)
    assert np.array_equal(again.train, tc.train) and np.array_equal(again.valid, tc.valid)


def test_validation_text_is_kept_out_of_fitting_and_its_oov_counted(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("abc abc abc\n" * 90 + "xyz xyz\n" * 15, encoding="utf-8")  # the last 10% alone holds x, y, z
    tc = tokenized_corpus([f], level="char", cache_dir=tmp_path / "cache")
    assert tc.tokenizer.to_dict()["chars"] == ["\n", " ", "a", "b", "c"]
    assert tc.valid_oov == 90 and tc.tokenizer.decode(tc.valid[:4]) == "\ufffd\ufffd\ufffd "
    words = tokenized_corpus([f], level="word", cache_dir=tmp_path / "cache")
    assert words.tokenizer.to_dict()["vocab"] == ["<unk>", "<eos>", "abc"] and words.valid_oov == 30


def test_separate_validation_files_and_word_oov(tmp_path):
    train, valid = CORPORA / "wikitext-2.valid.txt", CORPORA / "wikitext-2.test.txt"
    tc = tokenized_corpus([train], valid=[valid], level="word", cache_dir=tmp_path)
    tok = fit_tokenizer("word", read_corpus(train))
    valid_text = read_corpus(valid)
    ids, oov = tok.encode_with_oov(valid_text)
    assert tc.tokenizer == tok and np.array_equal(tc.valid, ids) and tc.valid_oov == oov > 0
    assert tc.valid_oov < np.count_nonzero(ids == tok.unk_id)  # a literal <unk> is a word, not OOV
    assert len(tc.train) == len(tok.encode(read_corpus(train)))


def test_resume_with_the_fitted_tokenizer_reuses_the_entry_and_another_tokenizer_gets_its_own(tmp_path, corpus, fits):
    first = tokenized_corpus([corpus], level="word", cache_dir=tmp_path / "cache")
    resumed = tokenized_corpus([corpus], level="word", tokenizer=first.tokenizer, cache_dir=tmp_path / "cache")
    assert resumed.reused and resumed.path == first.path and fits == ["word"]
    other = fit_tokenizer("word", "the king and the queen\n")
    tc = tokenized_corpus([corpus], level="word", tokenizer=other, cache_dir=tmp_path / "cache")
    assert not tc.reused and tc.path != first.path and fits == ["word"] and tc.tokenizer == other
    assert np.array_equal(tc.train, other.encode_array(_parts([corpus], 0.1)[0]))
    assert tokenized_corpus([corpus], tokenizer=other, cache_dir=tmp_path / "cache").reused


# --------------------------------------------------------------------------- what makes a new entry


def test_a_changed_corpus_gets_a_new_entry_even_with_the_same_size_and_time(tmp_path, corpus):
    before = tokenized_corpus([corpus], cache_dir=tmp_path / "cache")
    stat = corpus.stat()
    data = bytearray(corpus.read_bytes())
    data[data.index(b"e")] = ord("t")  # same size, same characters: only the content differs
    corpus.write_bytes(bytes(data))
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = tokenized_corpus([corpus], cache_dir=tmp_path / "cache")
    assert not after.reused and after.path != before.path and after.fingerprint != before.fingerprint
    assert np.array_equal(after.train, after.tokenizer.encode_array(_parts([corpus], 0.1)[0]))
    assert after.valid_fingerprint == before.valid_fingerprint  # the held-out end did not change


def test_split_options_tokenizer_options_and_error_mode_are_part_of_the_key(tmp_path, corpus):
    paths = {tokenized_corpus([corpus], cache_dir=tmp_path).path}
    paths.add(tokenized_corpus([corpus], valid_fraction=0.2, cache_dir=tmp_path).path)
    paths.add(tokenized_corpus([corpus], level="word", cache_dir=tmp_path).path)
    paths.add(tokenized_corpus([corpus], level="word", tokenizer_options={"min_freq": 2}, cache_dir=tmp_path).path)
    paths.add(tokenized_corpus([corpus], encoding_errors="replace", cache_dir=tmp_path).path)
    assert len(paths) == 5
    assert tokenized_corpus([corpus], level="word", tokenizer_options={"min_freq": None}, cache_dir=tmp_path).reused


# --------------------------------------------------------------------------- never trusting a damaged entry


def _flip(path: Path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: os.truncate(e / "train.bin", (e / "train.bin").stat().st_size - 1),
        lambda e: _flip(e / "train.bin", 1000),
        lambda e: _flip(e / "valid.bin"),
        lambda e: (e / "valid.bin").unlink(),
        lambda e: (e / "meta.json").unlink(),
        lambda e: (e / "meta.json").write_text('{"format": "charlm-tokens", "vers'),
        lambda e: (e / "meta.json").write_text(
            json.dumps({**json.loads((e / "meta.json").read_text()), "dtype": "uint16"})
        ),
        lambda e: (e / "tokenizer.json").write_text((e / "tokenizer.json").read_text().replace('"a"', '"\\u00e0"')),
    ],
    ids=[
        "truncated",
        "train-flipped",
        "valid-flipped",
        "valid-missing",
        "meta-missing",
        "meta-garbled",
        "meta-edited",
        "tokenizer-edited",
    ],
)
def test_a_damaged_entry_is_detected_and_rebuilt(tmp_path, corpus, fits, damage):
    good = tokenized_corpus([corpus], cache_dir=tmp_path / "cache")
    expected_train, expected_valid = np.array(good.train), np.array(good.valid)
    damage(good.path)
    again = tokenized_corpus([corpus], cache_dir=tmp_path / "cache")
    assert not again.reused and fits == ["char", "char"] and again.path == good.path
    assert np.array_equal(again.train, expected_train) and np.array_equal(again.valid, expected_valid)
    assert tokenized_corpus([corpus], cache_dir=tmp_path / "cache").reused
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".lock")) == [
        "CACHEDIR.TAG",
        good.path.name,
    ]


def test_leftovers_of_a_killed_build_are_removed(tmp_path, corpus):
    key = tokenized_corpus([corpus], cache_dir=tmp_path).path.name
    for name in (f".build-{key}-x1", f".trash-{key}-7", ".build-0123abcd-x2"):  # of this key, and of another
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.bin").write_bytes(b"\x01" * 10)
    tokenized_corpus([corpus], valid_fraction=0.3, cache_dir=tmp_path)  # any build sweeps them
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".build", ".trash"))]


def test_two_builders_at_once_share_one_entry(tmp_path, corpus, fits):
    barrier, results = threading.Barrier(2), []

    def build() -> None:
        barrier.wait()
        results.append(tokenized_corpus([corpus], level="word", cache_dir=tmp_path))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.reused for r in results) == [False, True] and fits == ["word"]
    assert results[0].path == results[1].path and np.array_equal(results[0].train, results[1].train)


# --------------------------------------------------------------------------- dtype edges


@pytest.mark.parametrize("vocab, dtype", [(256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)])
def test_ids_take_the_smallest_dtype_at_the_edges(tmp_path, vocab, dtype):
    codes = [c for c in range(0x21, 0x12000) if not 0xD800 <= c < 0xE000 and c != 0xFEFF][: vocab - 1]  # + <unk>
    (tmp_path / "train.txt").write_text("".join(map(chr, codes)), encoding="utf-8")
    (tmp_path / "valid.txt").write_text(chr(codes[-1]) + "!!", encoding="utf-8")
    tc = tokenized_corpus([tmp_path / "train.txt"], valid=[tmp_path / "valid.txt"], cache_dir=tmp_path / "cache")
    assert tc.tokenizer.vocab_size == vocab and tc.train.dtype == dtype and tc.valid.dtype == dtype
    assert (tc.path / "train.bin").stat().st_size == (vocab - 1) * np.dtype(dtype).itemsize
    assert tc.train[-1] == vocab - 1 and tc.valid[0] == vocab - 1  # the largest id survives the round trip
    assert tokenized_corpus(
        [tmp_path / "train.txt"], valid=[tmp_path / "valid.txt"], cache_dir=tmp_path / "cache"
    ).reused


# --------------------------------------------------------------------------- corpus directories and errors


def test_the_cache_and_excluded_directories_inside_a_corpus_directory_are_not_read(tmp_path, corpus):
    d = tmp_path / "project"
    d.mkdir()
    corpus.rename(d / "text.txt")
    (d / "run").mkdir()
    first = tokenized_corpus([d], cache_dir=d / "tokens", exclude=[d / "run"])
    (d / "run" / "log.txt").write_text("written by the run\n")
    again = tokenized_corpus([d], cache_dir=d / "tokens", exclude=[d / "run"])
    assert again.reused and again.path == first.path  # neither the cache nor the run's output became corpus


def test_errors_are_one_line_and_name_the_fix(tmp_path, corpus):
    with pytest.raises(ConfigError, match=r"valid fraction must be in \(0, 1\)"):
        tokenized_corpus([corpus], valid_fraction=1.0, cache_dir=tmp_path)
    (tmp_path / "blank.txt").write_text(" \t ")
    with pytest.raises(ConfigError, match="validation text has fewer than 2 tokens; use a larger --valid-fraction"):
        tokenized_corpus([corpus], valid=[tmp_path / "blank.txt"], level="word", cache_dir=tmp_path / "c")
    (tmp_path / "one-line.txt").write_text("x" * 50)
    with pytest.raises(
        ConfigError, match="valid fraction 0.99 leaves no training text before the cut; lower --valid-fraction"
    ):
        tokenized_corpus([tmp_path / "one-line.txt"], valid_fraction=0.99, cache_dir=tmp_path / "c")
    (tmp_path / "two.txt").write_text("ab")
    with pytest.raises(ConfigError, match="training text has 1 tokens; use a longer corpus"):
        tokenized_corpus([tmp_path / "two.txt"], valid_fraction=0.5, cache_dir=tmp_path / "c")
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"cannot write the token cache in .*file/cache \(Not a directory\)") as info:
        tokenized_corpus([corpus], cache_dir=tmp_path / "file" / "cache")
    assert "\n" not in str(info.value)
    with pytest.raises(CorpusError, match="not found"):
        tokenized_corpus([tmp_path / "missing.txt"], cache_dir=tmp_path)
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n" * 10)
    with pytest.raises(CorpusError, match="not valid UTF-8.*--encoding-errors replace"):
        tokenized_corpus([tmp_path / "latin1.txt"], cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob(".build-*"))  # the failed build left nothing behind
    assert (
        tokenized_corpus([tmp_path / "latin1.txt"], encoding_errors="replace", cache_dir=tmp_path / "c").valid_chars
        == 5
    )


def test_shard_is_a_contiguous_view(tmp_path, corpus):
    tc = tokenized_corpus([corpus], cache_dir=tmp_path)
    parts = [shard(tc.train, r, 3) for r in range(3)]
    n = len(tc.train) // 3
    assert [len(p) for p in parts] == [n] * 3 and np.array_equal(np.concatenate(parts), tc.train[: 3 * n])
    assert all(np.shares_memory(p, tc.train) for p in parts)
    with pytest.raises(ValueError, match="rank"):
        shard(tc.train, 3, 3)


def test_each_rank_reads_its_own_contiguous_shard():
    ids = np.arange(11)
    assert shard(ids, 0, 2).tolist() == [0, 1, 2, 3, 4]
    assert shard(ids, 1, 2).tolist() == [5, 6, 7, 8, 9]  # the remainder is dropped: equal parts
    assert shard(ids, 0, 1).tolist() == ids.tolist()  # a single process reads everything
