"""Tag schemes, entity metrics (a hand-worked example and seqeval as a second implementation), the readers of
CoNLL-U and column files and their one-line errors, and a tiny tagger that overfits a tiny labelled text."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch

import charlm
from charlm.errors import CorpusError
from charlm.tagging import (
    SequenceTagger,
    check_tags,
    constraints,
    convert,
    read_labelled,
    read_raw,
    report,
    score,
    spans,
    training_tags,
)
from charlm.tagging.schemes import detect, violation
from charlm.training import TrainConfig, train

# --------------------------------------------------------------------------- schemes


def test_spans_follow_conlleval_including_sloppy_sequences() -> None:
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "S-MISC", "E-MISC"]
    assert spans(tags) == [("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6), ("ORG", 6, 7), ("MISC", 7, 8), ("MISC", 8, 9)]


def test_conversion_between_schemes_keeps_spans() -> None:
    bio = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG", "I-ORG"]
    bioes = convert(bio, "bioes")
    assert bioes == ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "O", "B-ORG", "I-ORG", "E-ORG"]
    iob1 = convert(bio, "iob1")
    assert iob1 == ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "O", "I-ORG", "I-ORG", "I-ORG"]
    for tags in (bioes, iob1):
        assert spans(tags) == spans(bio)
        assert convert(tags, "bio") == bio
    assert violation(bio, "bio") is None and violation(bioes, "bioes") is None and violation(iob1, "iob1") is None
    assert violation(iob1, "bio") == 0  # an I- after O (the start) is IOB1, not BIO
    assert detect([iob1]) == "iob1" and detect([bio]) == "bio" and detect([bioes]) == "bioes"


@pytest.mark.parametrize("scheme", ["bio", "iob1", "bioes"])
def test_constraints_allow_exactly_the_valid_sequences(scheme: str) -> None:
    prefixes = "BIES" if scheme == "bioes" else "BI"
    tags = ["O", *(f"{p}-{t}" for t in "XY" for p in prefixes)]
    allowed, start, end = constraints(tags, scheme)
    for n in (1, 2, 3):
        for seq in itertools.product(range(len(tags)), repeat=n):
            ok = bool(start[seq[0]]) and bool(end[seq[-1]]) and all(allowed[a, b] for a, b in zip(seq, seq[1:]))
            assert ok == (violation([tags[i] for i in seq], scheme) is None), [tags[i] for i in seq]


# --------------------------------------------------------------------------- metrics


def test_entity_figures_of_a_hand_worked_example() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "B-PER"]]
    # gold chunks: PER(0,2) LOC(3,4) | ORG(0,1) PER(2,3) = 4; predicted: PER(0,2) ORG(3,4) | ORG(0,2) PER(2,3) = 4
    # correct: PER(0,2), PER(2,3) = 2 -> P = R = F1 = 0.5; tokens right: 3 + 2 of 7
    s = score(gold, pred)
    assert s.entities is not None
    assert (s.entities["precision"], s.entities["recall"], s.entities["f1"]) == (0.5, 0.5, 0.5)
    assert s.per_type["PER"]["f1"] == 1.0 and s.per_type["LOC"]["recall"] == 0.0 and s.per_type["ORG"]["f1"] == 0.0
    assert s.accuracy == pytest.approx(5 / 7)
    assert "F1 50.00" in report(s)


def test_entity_f1_agrees_with_seqeval_on_random_tags() -> None:
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]  # sloppy sequences included (I- after O)
    for _ in range(20):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(15)]
        pred = [[rng.choice(tags) if rng.random() < 0.4 else t for t in s] for s in gold]
        ours = score(gold, pred)
        assert ours.entities is not None
        assert ours.entities["f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-12)
        assert ours.entities["precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-12)
        assert ours.entities["recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=1e-12)
        assert ours.accuracy == pytest.approx(seqeval.accuracy_score(gold, pred))


# --------------------------------------------------------------------------- readers

CONLLU = """# sent_id = 1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:x\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path: Path) -> None:
    path = tmp_path / "a.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    sents, fmt = read_labelled(path)
    assert fmt == "conllu"
    assert [s.words for s in sents] == [["Do", "n't", "go", "."], ["Hi"]]
    assert [s.tags for s in sents] == [["AUX", "PART", "VERB", "PUNCT"], ["INTJ"]]
    assert sents[0].lines == [4, 5, 6, 8]
    assert read_labelled(path, "xpos")[0][0].tags == ["VBP", "RB", "VB", "."]


def test_column_files_docstart_and_whitespace_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- O\n\nJohn\tB-PER\nlives  O\n\t\nin O\nParis B-LOC\n", encoding="utf-8")
    sents, fmt = read_labelled(path)
    assert fmt == "column"
    assert [s.words for s in sents] == [["John", "lives"], ["in", "Paris"]]
    assert [s.tags for s in sents] == [["B-PER", "O"], ["O", "B-LOC"]]
    assert training_tags(sents, None) == "bio"


@pytest.mark.parametrize(
    "text,name,problem",
    [
        ("John B-PER\nlives\n", "a.conll", "a.conll:2: the token 'lives' has no tag"),
        ("1\tHi\thi\tINTJ\n", "a.conllu", "a.conllu:1: a CoNLL-U token line has 10 tab-separated columns, this one 4"),
        ("1\tHi\thi\t_\tUH\t_\t0\troot\t_\t_\n", "a.conllu", "a.conllu:1: the token 'Hi' has no UPOS tag"),
    ],
)
def test_bad_files_are_one_line_errors_naming_file_and_line(tmp_path: Path, text: str, name: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CorpusError) as err:
        read_labelled(path)
    assert str(err.value).startswith(str(tmp_path / problem)) and "\n" not in str(err.value)


def test_a_scheme_violation_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text("John B-PER\nSmith I-PER\n\nin O\nParis E-LOC\n", encoding="utf-8")
    sents, _ = read_labelled(path)
    with pytest.raises(CorpusError, match=r"a\.conll:5: tag 'E-LOC' is not allowed there in the BIO scheme"):
        check_tags(sents, "bio", str(path))


def test_raw_text_is_split_like_the_word_tokenizer() -> None:
    assert [s.words for s in read_raw("Don't stop, Mr. Smith!\n\nHi there\n")] == [
        ["Don't", "stop", ",", "Mr", ".", "Smith", "!"],
        ["Hi", "there"],
    ]
    assert read_raw("a,b c\n", pretokenized=True)[0].words == ["a,b", "c"]


# --------------------------------------------------------------------------- a tiny tagger

TINY_NER = """John B-PER
lives O
in O
New B-LOC
York I-LOC
. O

Mary B-PER
visited O
Paris B-LOC
. O

the O
cat O
sat O

Bob B-PER
Smith I-PER
likes O
Rome B-LOC
"""


@pytest.mark.parametrize("crf", [True, False])
def test_a_tiny_tagger_overfits_a_tiny_text(tmp_path: Path, crf: bool) -> None:
    path = tmp_path / "tiny.conll"
    path.write_text(TINY_NER, encoding="utf-8")
    out = tmp_path / "ck"
    result = charlm.train(
        path, model="tag", valid=(str(path),), out=str(out), max_steps=80, eval_interval=40, hidden_size=32,
        emb_size=16, num_layers=1, batch_size=4, lr=1e-2, dropout=0.0, crf=crf, seed=3, baselines=False,
    )  # fmt: skip
    assert result.status == "max steps"
    tagger = charlm.load(out, device="cpu")
    assert isinstance(tagger, SequenceTagger)
    assert tagger.model.config.crf is crf
    figures = tagger.evaluate(path)
    assert figures.accuracy == 1.0 and figures.f1 == 1.0
    [tagged] = tagger.tag([["Mary", "visited", "New", "York", "."]])
    assert tagged.tags == ("B-PER", "O", "B-LOC", "I-LOC", "O")
    assert all(0.5 < p <= 1.0 + 1e-6 for p in tagged.confidences)
    # the validation record of the loop carries the task's figures
    recs = [r for r in charlm.checkpoint.read_metrics(out) if r.get("type") == "valid"]
    assert recs[-1]["valid_f1"] == 1.0 and recs[-1]["valid_accuracy"] == 1.0
    assert recs[-1]["valid_criterion"] == 0.0 and result.best_valid_loss == 0.0  # best follows 1 - F1


def test_a_tagger_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "tiny.conll"
    path.write_text(TINY_NER, encoding="utf-8")
    opts = dict(model="tag", valid=(str(path),), hidden_size=16, emb_size=8, num_layers=1, batch_size=2,
                eval_interval=5, seed=1, baselines=False)  # fmt: skip
    whole = charlm.train(path, out=str(tmp_path / "a"), max_steps=10, **opts)
    config = TrainConfig.from_options(corpus=(str(path),), out=str(tmp_path / "b"), max_steps=10, **opts)
    stopped = train(config, stop_after=lambda step: step >= 5)  # as Ctrl-C would, at step 5
    assert stopped.status == "interrupted"
    resumed = charlm.train(path, out=str(tmp_path / "b"), max_steps=10, resume=True, **opts)
    assert resumed.resumed_from == 5 and resumed.step == 10
    assert resumed.last_valid_loss == pytest.approx(whole.last_valid_loss, rel=1e-5)
    a = charlm.load(tmp_path / "a", device="cpu").model.state_dict()
    b = charlm.load(tmp_path / "b", device="cpu").model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
