"""Reading corpora: cleaning (BOM, CRLF), directories, streaming, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.corpus import iter_text_chunks, read_corpus, read_text_file
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
    f = write(tmp_path / "latin1.txt", BOM + "caf".encode() + b"\xe9 au lait\n")
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
