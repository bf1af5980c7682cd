"""Text classification, the parts without training: readers, metrics (hand-worked and scikit-learn), the model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from charlm.classify import (
    ClassifierVocab,
    Columns,
    Example,
    multi_label_report,
    naive_bayes,
    parse_examples,
    read_examples,
    report,
)
from charlm.errors import CorpusError
from charlm.models import ClassifierConfig, TextClassifier
from charlm.models.classifier import pool, reverse_index

DATA = [
    ("positive", "a gorgeous , witty film"),
    ("negative", 'dull, "tedious" and long'),
    ("sports,politics", "the minister scored a goal"),
    ("negative", "naïve café plot"),
]


def write_all(tmp_path: Path) -> dict[str, Path]:
    """The same examples in each format the readers take."""
    labels = [tuple(x.split(",")) for x, _ in DATA]
    paths = {
        "tsv": tmp_path / "d.tsv",
        "csv": tmp_path / "d.csv",
        "jsonl": tmp_path / "d.jsonl",
        "fasttext": tmp_path / "d.ft",
    }
    paths["tsv"].write_text("".join(f"{x}\t{t}\n" for x, t in DATA), encoding="utf-8")
    quoted = [t.replace('"', '""') for _, t in DATA]
    paths["csv"].write_text(
        "id,body,tag\r\n" + "".join(f'{i},"{q}","{x}"\r\n' for i, ((x, _), q) in enumerate(zip(DATA, quoted))),
        encoding="utf-8",
    )
    paths["jsonl"].write_text(
        "".join(json.dumps({"body": t, "tag": list(ls) if len(ls) > 1 else ls[0]}) + "\n" for (_, t), ls in
                zip(DATA, labels)),
        encoding="utf-8",
    )  # fmt: skip
    paths["fasttext"].write_text(
        "".join(" ".join(f"__label__{x}" for x in ls) + f" {t}\n" for (_, t), ls in zip(DATA, labels)),
        encoding="utf-8",
    )
    return paths


def test_every_format_gives_the_same_examples(tmp_path: Path) -> None:
    columns = Columns(text="body", label="tag")
    read = {fmt: read_examples(path, columns=columns) for fmt, path in write_all(tmp_path).items()}
    expected = [(t, tuple(x.split(","))) for x, t in DATA]
    for fmt, examples in read.items():
        assert [(e.text, e.labels) for e in examples] == expected, fmt


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("bad.tsv", "positive\tfine\nno tab here\n", "line 2: no TAB"),
        ("bad.tsv", "positive\tfine\n\t  text without label\n", "line 2: no label"),
        ("bad.tsv", "positive\tfine\n\npositive\t \n", "line 3: empty text"),
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "x"\n', "line 2: not JSON"),
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{"txt": "b", "label": "x"}\n', "line 2: no string field 'text'"),
        ("bad.jsonl", '{"text": "a", "label": {"x": 1}}\n', "line 1: field 'label' is not a label"),
        ("bad.ft", "__label__a fine\nno label\n", "line 2: no __label__"),
        ("bad.csv", 'text,label\nfine,x\n"a",b,c\n', "line 3: 3 fields, the header has 2"),
        ("bad.csv", "body,label\nfine,x\n", "line 1: no column 'text'"),
        ("bad.txt", "one text\n", "cannot tell the format"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_line(tmp_path: Path, name: str, content: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        read_examples(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and problem in message


def test_bad_bytes_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "x.tsv").write_bytes(b"positive\tcaf\xe9\n")
    with pytest.raises(CorpusError, match="not valid UTF-8 .byte offset 12"):
        read_examples(tmp_path / "x.tsv")
    with pytest.raises(CorpusError, match="does not exist"):
        read_examples(tmp_path / "missing.tsv")


def test_plain_lines_and_unlabelled_reading() -> None:
    assert [e.text for e in parse_examples("a\n\n b \n", "-", "lines", labelled=False)] == ["a", "b"]
    assert [e.line for e in parse_examples("a\n\n b \n", "-", "lines", labelled=False)] == [1, 3]
    with pytest.raises(CorpusError, match="plain lines have no labels"):
        parse_examples("a\n", "-", "lines")


def test_metrics_by_hand() -> None:
    # gold   0 0 1 1 2     class 0: tp 1, fp 1 (the 2), fn 1  -> P 1/2, R 1/2, F1 1/2
    # pred   0 1 1 1 0     class 1: tp 2, fp 1, fn 0          -> P 2/3, R 1,   F1 0.8
    #                      class 2: never predicted            -> P 0,   R 0,   F1 0
    r = report(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ("a", "b", "c"))
    assert r.accuracy == pytest.approx(3 / 5)
    assert [(c.precision, c.recall, c.f1, c.support) for c in r.classes] == pytest.approx(
        [(0.5, 0.5, 0.5, 2), (2 / 3, 1.0, 0.8, 2), (0.0, 0.0, 0.0, 1)]
    )
    assert r.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert r.confusion is not None and r.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # multi-label: 2 texts, labels x y; gold {x}, {x, y}; predicted {x, y}, {x}
    m = multi_label_report(np.array([[1, 0], [1, 1]]), np.array([[1, 1], [1, 0]]), ("x", "y"))
    assert m.accuracy == 0.0  # neither set is exactly right
    assert [c.f1 for c in m.classes] == pytest.approx([1.0, 0.0])
    assert m.micro_f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp 2, fp 1, fn 1


def test_metrics_equal_scikit_learn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for k in (2, 3, 7):
        gold, pred = rng.integers(0, k, 200), rng.integers(0, k, 200)
        pred[:5] = 0  # a class may be missing from one side: zero_division 0 on both
        r = report(gold, pred, tuple("abcdefg"[:k]))
        labels = list(range(k))
        assert r.accuracy == pytest.approx(sk.accuracy_score(gold, pred))
        assert r.macro_f1 == pytest.approx(sk.f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
        p, rc, f, s = sk.precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
        assert [c.precision for c in r.classes] == pytest.approx(p)
        assert [c.recall for c in r.classes] == pytest.approx(rc)
        assert [c.f1 for c in r.classes] == pytest.approx(f)
        assert [c.support for c in r.classes] == list(s)
        assert (
            r.confusion is not None and r.confusion.tolist() == sk.confusion_matrix(gold, pred, labels=labels).tolist()
        )
    gold, pred = rng.integers(0, 2, (100, 4)), rng.integers(0, 2, (100, 4))
    m = multi_label_report(gold, pred, ("a", "b", "c", "d"))
    assert m.macro_f1 == pytest.approx(sk.f1_score(gold, pred, average="macro", zero_division=0))
    assert m.micro_f1 == pytest.approx(sk.f1_score(gold, pred, average="micro", zero_division=0))
    assert m.accuracy == pytest.approx(sk.accuracy_score(gold, pred))  # subset accuracy


def tiny_model(vocab: ClassifierVocab, **changes: object) -> TextClassifier:
    torch.manual_seed(0)
    config = ClassifierConfig(num_labels=len(vocab.labels), vocab_size=vocab.vocab_size,
                              char_vocab_size=len(vocab.chars), word_emb=8, char_emb=4, char_channels=6,
                              hidden_size=5, num_layers=2, pooling="mean+max+last", dropout=0.0)  # fmt: skip
    return TextClassifier(config.with_(**changes)).eval()


def test_reverse_index_reverses_each_text_within_its_length() -> None:
    idx = reverse_index(torch.tensor([3, 1, 5]), 5)[..., 0]
    assert idx.tolist() == [[2, 1, 0, 3, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]
    x = torch.randn(3, 5, 2)
    twice = x.gather(1, reverse_index(torch.tensor([3, 1, 5]), 5).expand(-1, -1, 2))
    assert torch.equal(twice.gather(1, reverse_index(torch.tensor([3, 1, 5]), 5).expand(-1, -1, 2)), x)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_text_reads_the_same_alone_or_padded_in_a_batch(cell: str) -> None:
    texts = ["good film", "a very long and rather tedious film that never ends , sadly", "film"]
    vocab = ClassifierVocab.fit(texts * 2, ["neg", "pos"])
    model = tiny_model(vocab, cell=cell)
    with torch.no_grad():
        together = model.encode(vocab.encode(texts))
        alone = torch.cat([model.encode(vocab.encode([t])) for t in texts])
    assert torch.allclose(together, alone, atol=1e-5)


def test_pooling_by_hand() -> None:
    h = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [-1.0], [5.0]]])  # (2, 3, 1); text 0 has 2 positions
    out = pool(h, torch.tensor([2, 3]), ("mean", "max", "last"))
    assert out.tolist() == [[2.0, 3.0, 3.0], [2.0, 5.0, 5.0]]


def test_probabilities_sum_to_one_and_unseen_words_read_through_characters() -> None:
    vocab = ClassifierVocab.fit(["good good film", "bad bad film"], ["neg", "pos", "meh"])
    model = tiny_model(vocab)
    batch = vocab.encode(["good film", "goodish filmmaking", "", "zzz"])
    assert batch.words is not None and batch.words[1, :2].tolist() == [1, 1]  # both words unseen: <unk>
    with torch.no_grad():
        probs = model.probabilities(model(batch))
    assert probs.shape == (4, 3) and torch.allclose(probs.sum(1), torch.ones(4))
    with torch.no_grad():
        a, b = model(vocab.encode(["dim"])), model(vocab.encode(["bag"]))  # unseen words, seen characters
    assert not torch.allclose(a, b)  # two unseen words differ by their characters


def test_vocabulary_round_trip_and_examples_compare() -> None:
    vocab = ClassifierVocab.fit(["It isn't great!", "it isn't"], ["a", "b"])
    assert "isn't" in vocab.words and "it" in vocab.words  # lower-cased; the contraction is one word
    again = ClassifierVocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again.to_dict() == vocab.to_dict() and again.fingerprint() == vocab.fingerprint()
    assert Example("x", ("a",), 1) == Example("x", ("a",), 1)


def test_naive_bayes_equals_counting_by_hand() -> None:
    texts = ["good fun", "good good plot", "bad plot", "bad dull fun", "dull"]
    gold = [0, 0, 1, 1, 1]
    vocab = ClassifierVocab.fit(texts, ["pos", "neg"], ngrams=True)
    sets = vocab.ngram_sets(texts)
    targets = np.eye(2)[gold]
    weights, bias = naive_bayes.fit_table(sets, targets, len(vocab.ngrams), multi_label=False)
    got = naive_bayes.scores(vocab.ngram_sets(["good plot", "dull fun"]), weights, bias)
    # by hand: binarized counts per label, add-one smoothing over the n-gram vocabulary, then the log-odds
    V = len(vocab.ngrams)

    def log_p(text: str, label: int) -> float:
        grams = naive_bayes.ngrams_of(text.split())
        members = [naive_bayes.ngrams_of(t.split()) for t, y in zip(texts, gold) if y == label]
        total = sum(len(m) for m in members)
        prior = math.log((len(members) + 1) / (len(texts) + 2))
        return prior + sum(math.log((sum(g in m for m in members) + 1) / (total + V)) for g in grams if g in
                           vocab.ngram_index)  # fmt: skip

    for row, text in zip(got.tolist(), ["good plot", "dull fun"]):
        assert row[0] - row[1] == pytest.approx(log_p(text, 0) - log_p(text, 1), rel=1e-5)
    crossed = naive_bayes.cross_fitted(sets, targets, V, False, seed=3)
    assert crossed.shape == (5, 2) and torch.isfinite(crossed).all()


def test_balanced_class_weights() -> None:
    from charlm.training.tasks.classify import class_weights

    examples = [Example("t", ("a",), i) for i in range(6)] + [Example("t", ("b",), 9), Example("t", ("b",), 10)]
    vocab = ClassifierVocab.fit(["t"], ["a", "b", "c"])
    # scikit-learn's "balanced": N / (K x count), 8 / (3 x 6) and 8 / (3 x 2); a label never seen weighs 1
    assert class_weights(vocab, examples, False).tolist() == pytest.approx([8 / 18, 8 / 6, 1.0])
