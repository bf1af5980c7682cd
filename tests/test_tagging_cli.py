"""The tagging commands as a user runs them: train --model tag, tag (every output format), evaluate, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.cli import main

DATA = Path(__file__).resolve().parent.parent / "corpora"
EWT_DEV = DATA / "ud-english-ewt" / "dev-slice.conllu"
WNUT_DEV = DATA / "wnut17" / "dev-slice.conll"
SMALL = ["--max-steps", "6", "--eval-interval", "3", "--hidden", "16", "--emb", "8", "--layers", "1", "-b", "8",
         "--no-baselines", "-q"]  # fmt: skip


@pytest.fixture(scope="module")
def pos_tagger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pos") / "ck"
    r = CliRunner().invoke(main, ["train", str(EWT_DEV), "--model", "tag", "--out", str(out), *SMALL])
    assert r.exit_code == 0, r.output
    return out


def test_tag_writes_every_format(pos_tagger: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    raw = runner.invoke(main, ["tag", str(pos_tagger), "-", "-q"], input="The cat sat.\n\nIt ran!\n")
    assert raw.exit_code == 0, raw.output
    lines = raw.output.splitlines()
    assert len(lines) == 2 and [w.rsplit("/", 1)[0] for w in lines[0].split()] == ["The", "cat", "sat", "."]
    js = runner.invoke(main, ["tag", str(pos_tagger), "-", "--format", "json", "-q"], input="The cat sat.\n")
    row = json.loads(js.output)
    assert row["words"] == ["The", "cat", "sat", "."] and len(row["tags"]) == len(row["confidences"]) == 4
    assert all(0 < p <= 1 for p in row["confidences"])
    conllu = runner.invoke(main, ["tag", str(pos_tagger), str(EWT_DEV), "-q"])
    out, src = conllu.output.splitlines(), EWT_DEV.read_text(encoding="utf-8").splitlines()
    assert len(out) == len(src)  # the file's own lines: comments, ranges; only the UPOS column changes
    for a, b in zip(out, src):
        ca, cb = a.split("\t"), b.split("\t")
        assert len(ca) == len(cb) and (len(ca) < 10 or ca[:3] + ca[4:] == cb[:3] + cb[4:])
    col = runner.invoke(main, ["tag", str(pos_tagger), "-", "--input", "column", "-q"], input="The\ncat\n\nHi\n")
    assert [x.split("\t")[0] for x in col.output.splitlines()] == ["The", "cat", "", "Hi", ""]
    assert all(len(x.split("\t")) == 2 for x in col.output.splitlines() if x)


def test_evaluate_reports_accuracy_and_json(pos_tagger: Path) -> None:
    r = CliRunner().invoke(main, ["evaluate", str(pos_tagger), str(EWT_DEV)])
    assert r.exit_code == 0 and r.output.startswith("sentences 100, tokens")
    j = CliRunner().invoke(main, ["evaluate", str(pos_tagger), str(EWT_DEV), "--json"])
    figures = json.loads(j.output)
    assert 0 <= figures["accuracy"] <= 1 and figures["entities"] is None and "NOUN" in figures["per_tag"]


def test_entity_tagger_evaluates_spans(tmp_path: Path) -> None:
    out = tmp_path / "ner"
    r = CliRunner().invoke(main, ["train", str(WNUT_DEV), "--model", "tag", "--out", str(out), *SMALL])
    assert r.exit_code == 0, r.output
    j = CliRunner().invoke(main, ["evaluate", str(out), str(WNUT_DEV), "--json"])
    figures = json.loads(j.output)
    assert figures["entities"]["gold"] == 101 and set(figures["per_type"]) >= {"location", "person"}


def test_bad_input_is_one_line_naming_file_and_line(pos_tagger: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.conll"
    bad.write_text("John B-PER\nlives\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["train", str(bad), "--model", "tag", "--out", str(tmp_path / "x"), *SMALL])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"Error: {bad}:2: " + r.output.split(":2: ")[1].strip()
    ]
    assert "has no tag" in r.output and "Traceback" not in r.output
    unknown = tmp_path / "unknown.conllu"
    unknown.write_text("1\tHi\thi\tNOTATAG\tUH\t_\t0\troot\t_\t_\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["evaluate", str(pos_tagger), str(unknown)])
    assert r.exit_code == 1 and f"{unknown}:1: tag 'NOTATAG' is not one the tagger knows" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_commands_refuse_the_wrong_kind_of_checkpoint(pos_tagger: Path, tmp_path: Path, tiny_corpus: Path) -> None:
    r = CliRunner().invoke(main, ["generate", str(pos_tagger)])
    assert r.exit_code == 1 and "not a language model" in r.output
    lm = tmp_path / "lm"
    r = CliRunner().invoke(main, ["train", str(tiny_corpus), "--out", str(lm), "--max-steps", "2", "--hidden", "8",
                                  "-b", "2", "--bptt", "20", "--no-baselines", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    for cmd in (["tag", str(lm), "-"], ["evaluate", str(lm), str(EWT_DEV)]):
        r = CliRunner().invoke(main, cmd, input="Hi\n")
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "language model" in r.output
