"""Reading corpora: cleaning (BOM, CRLF), directories, streaming, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.data.corpus import (
    CorpusFile,
    corpus_files,
    iter_corpus_chunks,
    iter_text_chunks,
    list_corpus,
    read_corpus,
    read_text_file,
    split_offset,
)
from charlm.errors import CharlmError, CorpusError

BOM = b"\xef\xbb\xbf"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def streamed(path: Path, chunk_bytes: int, errors: str = "strict") -> str:
    return "".join(iter_text_chunks(path, chunk_bytes=chunk_bytes, errors=errors))


# --------------------------------------------------------------------------- cleaning


def test_bom_removed_and_line_ends_become_lf(tmp_path):
    f = write(tmp_path / "a.txt", BOM + b"one\r\ntwo\rthree\n\r\nfour")
    assert read_text_file(f) == "one\ntwo\nthree\n\nfour"
    assert read_corpus(f) == "one\ntwo\nthree\n\nfour"
    assert streamed(f, 1) == "one\ntwo\nthree\n\nfour"


def test_only_a_leading_bom_is_removed(tmp_path):
    f = write(tmp_path / "a.txt", BOM + BOM + b"x" + BOM)
    assert read_text_file(f) == "\ufeffx\ufeff"
    assert streamed(f, 2) == "\ufeffx\ufeff"


def test_war_and_peace_is_cleaned():
    text = read_corpus(Path(__file__).parent.parent / "corpora" / "war_and_peace.txt")
    assert text.startswith('"Well, Prince')
    assert "\r" not in text and "\ufeff" not in text


# --------------------------------------------------------------------------- paths and directories


def test_directory_is_read_recursively_sorted_without_hidden_files(tmp_path):
    d = tmp_path / "corpus"
    write(d / "b.txt", b"b\n")
    write(d / "a" / "z.txt", b"a/z")  # no final newline: one is added before the next file
    write(d / "a-c.txt", b"a-c\n")
    write(d / ".hidden.txt", b"hidden\n")
    write(d / ".git" / "config", b"git\n")
    write(d / "a" / ".cache" / "x.txt", b"cache\n")
    assert read_corpus(d) == "a/z\na-c\nb\n"


def test_paths_are_joined_in_the_order_given(tmp_path):
    one = write(tmp_path / "1.txt", b"one")
    two = write(tmp_path / "2.txt", b"two")
    assert read_corpus([two, str(one)]) == "two\none"  # no newline added after the last file
    assert read_corpus((one,)) == "one"


def test_missing_path_names_it(tmp_path):
    with pytest.raises(CorpusError, match="not found: .*nope.txt"):
        read_corpus([tmp_path / "nope.txt"])
    with pytest.raises(CorpusError, match="not found"):
        read_text_file(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="not found"):
        list(iter_text_chunks(tmp_path / "nope.txt"))


def test_directory_without_visible_files(tmp_path):
    write(tmp_path / "d" / ".only-hidden", b"x")
    (tmp_path / "d" / "sub").mkdir()
    with pytest.raises(CorpusError, match="holds no files"):
        read_corpus(tmp_path / "d")


def test_no_paths_at_all():
    with pytest.raises(CorpusError, match="no corpus path"):
        read_corpus([])


def test_single_file_readers_reject_a_directory(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        read_text_file(tmp_path)


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("data", [b"", BOM], ids=["zero-bytes", "bom-only"])
def test_empty_file(tmp_path, data):
    f = write(tmp_path / "empty.txt", data)
    with pytest.raises(CorpusError, match="empty.txt is empty"):
        read_text_file(f)
    with pytest.raises(CorpusError, match="empty.txt is empty"):
        streamed(f, 1)
    write(tmp_path / "dir" / "ok.txt", b"ok\n")
    write(tmp_path / "dir" / "z.txt", data)
    with pytest.raises(CorpusError, match="z.txt is empty"):
        read_corpus(tmp_path / "dir")


def test_whitespace_only_file_is_text(tmp_path):
    f = write(tmp_path / "blank.txt", b" \r\n\t")
    assert read_text_file(f) == " \n\t"


def test_binary_file_names_the_file_and_offset(tmp_path):
    f = write(tmp_path / "img.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(CorpusError, match=r"img.png looks binary \(NUL byte at offset 8\)"):
        read_corpus(f)
    with pytest.raises(CorpusError, match=r"img.png looks binary \(NUL byte at offset 8\)"):
        streamed(f, 3)


def test_nul_after_the_first_8_kib_is_not_binary(tmp_path):
    f = write(tmp_path / "late.txt", b"a" * 9000 + b"\x00")
    assert read_text_file(f).endswith("a\x00")


def test_invalid_utf8_names_file_offset_and_fix(tmp_path):
    f = write(tmp_path / "latin1.txt", BOM + b"caf" + b"\xe9 au lait\n")
    msg = r"latin1.txt is not valid UTF-8 \(byte 0xe9 at offset 6\); fix the file or pass --encoding-errors replace"
    with pytest.raises(CorpusError, match=msg):
        read_corpus(f)
    for chunk in (1, 2, 7, 1 << 20):
        with pytest.raises(CorpusError, match=msg):
            streamed(f, chunk)


def test_truncated_sequence_at_the_end(tmp_path):
    f = write(tmp_path / "cut.txt", "ab€".encode()[:-1])  # € is 3 bytes; keep 2
    with pytest.raises(CorpusError, match="byte 0xe2 at offset 2"):
        read_text_file(f)
    with pytest.raises(CorpusError, match="byte 0xe2 at offset 2"):
        streamed(f, 1)


def test_errors_replace_gives_replacement_characters(tmp_path):
    f = write(tmp_path / "bad.txt", b"a\xffb\xe2\x82\r\n")
    assert read_text_file(f, errors="replace") == "a\ufffdb\ufffd\n"
    assert read_corpus([f], errors="replace") == "a\ufffdb\ufffd\n"
    assert streamed(f, 1, errors="replace") == "a\ufffdb\ufffd\n"


def test_errors_are_charlm_errors_with_one_line(tmp_path):
    f = write(tmp_path / "bad.txt", b"\xff")
    with pytest.raises(CharlmError) as info:
        read_text_file(f)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- streaming equals reading whole

_PIECES = st.sampled_from(["a", "b", " ", "\n", "\r", "\r\n", "é", "€", "😀", "\ufeff", "\t"])


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(_PIECES, min_size=1, max_size=40), bom=st.booleans(), chunk=st.integers(1, 9))
def test_streaming_equals_whole_file(tmp_path_factory, pieces, bom, chunk):
    f = tmp_path_factory.getbasetemp() / "stream.txt"
    data = (BOM if bom else b"") + "".join(pieces).encode()
    f.write_bytes(data)
    if not data.removeprefix(BOM):  # the piece "\ufeff" alone is a BOM: an empty file
        with pytest.raises(CorpusError, match="is empty"):
            streamed(f, chunk)
        return
    text = read_text_file(f)
    chunks = list(iter_text_chunks(f, chunk_bytes=chunk))
    assert "".join(chunks) == text
    assert "\r" not in text
    assert max(map(len, chunks)) <= chunk + 1  # streamed: a piece never exceeds the chunk (+ a held CR)


@settings(max_examples=150, deadline=None)
@given(
    good=st.text(alphabet="ab\r\né€😀", max_size=30),
    bad=st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80"]),
    tail=st.text(alphabet="ab\n€", max_size=5),
    bom=st.booleans(),
    chunk=st.integers(1, 9),
)
def test_streaming_reports_the_same_invalid_byte_offset(tmp_path_factory, good, bad, tail, bom, chunk):
    f = tmp_path_factory.getbasetemp() / "invalid.txt"
    data = (BOM if bom else b"") + good.encode() + bad + tail.encode()
    f.write_bytes(data)
    skip = 3 if data.startswith(BOM) else 0
    with pytest.raises(UnicodeDecodeError) as oracle:
        data[skip:].decode("utf-8")  # the plain decoder says where the first bad byte is
    expected = f"at offset {oracle.value.start + skip})"
    with pytest.raises(CorpusError) as whole:
        read_text_file(f)
    with pytest.raises(CorpusError) as stream:
        streamed(f, chunk)
    assert expected in str(whole.value)
    assert str(stream.value) == str(whole.value)
    assert read_text_file(f, errors="replace") == streamed(f, chunk, errors="replace")


# --------------------------------------------------------------------------- what a directory holds


def test_directory_skips_checkpoints_caches_and_excluded_paths(tmp_path):
    d = tmp_path / "corpus"
    write(d / "a.txt", b"a\n")
    write(d / "run" / "checkpoint.json", b'{"format": "charlm-checkpoint", "format_version": 1}')
    write(d / "run" / "last.safetensors", b"\x00binary")
    write(d / "run" / "sub" / "x.txt", b"inside a checkpoint\n")
    write(d / "tokens" / "CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55\n# charlm token cache\n")
    write(d / "tokens" / "k" / "train.bin", b"\x00\x01")
    write(d / "out" / "partial.txt", b"the run's own output, no checkpoint yet\n")
    write(d / "notes" / "checkpoint.json", b'{"format": "something else"}')  # not charlm's: read as text
    write(d / "fake-tag" / "CACHEDIR.TAG", b"no signature\n")
    assert read_corpus(d, exclude=[d / "out"]) == 'a\nno signature\n{"format": "something else"}'
    assert read_corpus(d, exclude=[str(d / "out" / ".." / "out")]) == read_corpus(d, exclude=[d / "out"])
    listed = list_corpus([d], exclude=[d / "notes", d / "fake-tag" / "CACHEDIR.TAG"])
    assert [p.name for p in listed] == ["a.txt", "partial.txt"]
    assert read_corpus([d / "out" / "partial.txt"], exclude=[d / "out"]).startswith("the run's")  # named files are read
    with pytest.raises(CorpusError, match="run is a checkpoint, token cache or output directory"):
        read_corpus(d / "run")
    with pytest.raises(CorpusError, match="out is a checkpoint, token cache or output directory"):
        read_corpus(d / "out", exclude=[d / "out"])


def test_corpus_files_have_sizes_and_are_checked_up_front(tmp_path):
    a = write(tmp_path / "d" / "a.txt", BOM + b"one\r\n")
    b = write(tmp_path / "d" / "b.txt", b"two")
    assert corpus_files(tmp_path / "d") == [CorpusFile(a, 8), CorpusFile(b, 3)]
    write(tmp_path / "d" / "c.bin", b"x\x00")
    with pytest.raises(CorpusError, match=r"c.bin looks binary \(NUL byte at offset 1\)"):
        corpus_files(tmp_path / "d")
    for data in (b"", BOM):
        with pytest.raises(CorpusError, match="e.txt is empty"):
            corpus_files([write(tmp_path / "e.txt", data)])


# --------------------------------------------------------------------------- byte ranges and the split

_PIECE = st.sampled_from(["ab", " ", "\n", "\r\n", "\r", "é", "€", "😀", "x y\n"])
_FILE = st.lists(_PIECE, min_size=1, max_size=12)


def _write_files(root: Path, contents: list[tuple[bool, list[str]]]) -> list[Path]:
    paths = []
    for i, (bom, pieces) in enumerate(contents):
        paths.append(write(root / f"{i:02d}.txt", (BOM if bom else b"") + "".join(pieces).encode()))
    return paths


@settings(max_examples=80, deadline=None)
@given(
    contents=st.lists(st.tuples(st.booleans(), _FILE), min_size=1, max_size=4),
    fraction=st.floats(0.01, 0.99),
    chunk=st.integers(1, 9),
)
def test_split_ranges_join_to_the_corpus_and_cut_at_a_line_start(tmp_path_factory, contents, fraction, chunk):
    root = tmp_path_factory.mktemp("split")
    paths = _write_files(root, contents)
    files = corpus_files(paths)
    text = read_corpus(paths)
    assert "".join(iter_corpus_chunks(files, chunk_bytes=chunk)) == text
    cut = split_offset(files, fraction)
    assert cut == _split_oracle([p.read_bytes() for p in paths], fraction)
    train = "".join(iter_corpus_chunks(files, chunk_bytes=chunk, stop=cut))
    valid = "".join(iter_corpus_chunks(files, chunk_bytes=chunk + 3, start=cut))
    assert train + valid == text  # whatever the chunk sizes, the two parts are the text cut in two


def _split_oracle(datas: list[bytes], fraction: float) -> int:
    """split_offset's rule, by brute force over every byte position."""
    raw, total = b"".join(datas), sum(map(len, datas))
    starts = {sum(map(len, datas[:i])) for i in range(1, len(datas))}
    target = int(total * (1 - fraction))
    line_starts = [p for p in range(max(1, target - total // 100 + 1), target + 1) if raw[p - 1] == 10 or p in starts]
    if line_starts:
        return max(line_starts)
    cut = target
    while cut > 0 and 0x80 <= raw[cut] < 0xC0:
        cut -= 1
    return cut - 1 if cut > 0 and raw[cut - 1 : cut + 1] == b"\r\n" else cut


def test_split_offset_prefers_the_last_line_start_in_the_window(tmp_path):
    # 10,000 bytes: target 9000, window (8900, 9000]; newlines at 1000, 8949, 8979 and 9500
    data = bytearray(b"x" * 10_000)
    for i in (1000, 8949, 8979, 9500):
        data[i] = ord("\n")
    assert split_offset(corpus_files([write(tmp_path / "a.txt", bytes(data))]), 0.1) == 8980
    data[8949] = data[8979] = ord("x")  # only the newline far before the window: the cut stays at the target
    assert split_offset(corpus_files([write(tmp_path / "a.txt", bytes(data))]), 0.1) == 9000
    g = write(tmp_path / "b.txt", b"y" * 8950 + b"\r\n" + b"z" * 1048)
    assert split_offset(corpus_files([g]), 0.1) == 8952  # just after the LF of a CRLF
    files = corpus_files([write(tmp_path / "c.txt", b"c" * 8970), write(tmp_path / "d.txt", b"d" * 1030)])
    assert split_offset(files, 0.1) == 8970  # the start of the second file is a line start


def test_split_offset_without_a_line_start_stays_on_a_character(tmp_path):
    f = write(tmp_path / "a.txt", "é".encode() * 5000)  # 10,000 bytes, no newline
    cut = split_offset(corpus_files([f]), 0.1001)  # target 8999, inside an é
    assert cut == 8998
    g = write(tmp_path / "b.txt", b"a" * 8999 + b"\r\n" + b"b" * 999)
    assert split_offset(corpus_files([g]), 0.1) == 8999  # target 9000 splits CRLF: moved before the CR


def test_iter_corpus_chunks_reports_bytes_read(tmp_path):
    files = corpus_files([write(tmp_path / "a.txt", BOM + b"abc\n" * 100), write(tmp_path / "b.txt", b"z")])
    seen: list[int] = []
    text = "".join(iter_corpus_chunks(files, chunk_bytes=64, on_read=seen.append))
    assert text == "abc\n" * 100 + "z"
    assert sum(seen) == 403 - 3 + 1 and max(seen) <= 64  # every byte but the BOM, in blocks of at most 64
