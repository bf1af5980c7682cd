"""Training and using classifiers: a tiny one separates two obvious labels, through the CLI and the library;
resume, multi-label, language-model features, and the errors a user meets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import charlm
from charlm.checkpoint import read_metrics, write_inference_checkpoint
from charlm.cli import main
from charlm.data import fit_tokenizer
from charlm.models import ModelConfig, RNNLanguageModel
from charlm.training import TrainConfig, train

GOOD = ["great", "wonderful", "superb", "lovely", "brilliant"]
BAD = ["awful", "boring", "dreadful", "dull", "tedious"]
FILLER = ["the", "film", "plot", "was", "a", "really", "cast", "and", "story", "quite"]
TINY = ["--hidden", "8", "--emb", "8", "--layers", "1", "--batch-size", "8", "--lr", "0.02", "--dropout", "0.1"]


def sentence(rng: random.Random, cue: list[str]) -> str:
    words = rng.sample(FILLER, 4) + [rng.choice(cue)]
    rng.shuffle(words)
    return " ".join(words)


def write_data(path: Path, n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = [("pos", sentence(rng, GOOD)) if i % 2 else ("neg", sentence(rng, BAD)) for i in range(n)]
    path.write_text("".join(f"{x}\t{t}\n" for x, t in rows), encoding="utf-8")
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny classifier trained through `charlm train --model classify`: (checkpoint, held-out TSV)."""
    tmp = tmp_path_factory.mktemp("clf")
    write_data(tmp / "train.tsv", 120, 1)
    write_data(tmp / "dev.tsv", 40, 2)
    out = tmp / "run"
    args = ["train", str(tmp / "train.tsv"), "--model", "classify", "--valid", str(tmp / "dev.tsv"), "--out", str(out),
            "--max-steps", "60", "--eval-interval", "30", "--no-ngrams", *TINY]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out, tmp / "dev.tsv"


def test_a_tiny_classifier_separates_two_obvious_labels(trained: tuple[Path, Path]) -> None:
    """The recurrent network alone (--no-ngrams) learns which words mark each label."""
    out, dev = trained
    clf = charlm.load(out)
    assert isinstance(clf, charlm.Classifier) and clf.labels == ("neg", "pos")
    report = clf.evaluate(dev)
    assert report.accuracy == 1.0 and report.macro_f1 == 1.0
    [p, q] = clf.classify(["the film was superb", "the plot was dreadful"])
    assert (p.label, q.label) == ("pos", "neg")
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["task"] == "classify" and meta["model_kind"] == "classify"
    valid = [r for r in read_metrics(out) if r.get("type") == "valid"]
    assert valid[-1]["valid_accuracy"] == 1.0 and "valid_macro_f1" in valid[-1]


def test_classify_command_outputs(trained: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = trained
    runner = CliRunner()
    texts = "the cast was lovely\n\nreally boring story\n"
    result = runner.invoke(main, ["classify", str(out), "-", "--output", "jsonl"], input=texts)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["line"], r["label"]) for r in rows] == [(1, "pos"), (3, "neg")]
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5) for r in rows)
    tsv = runner.invoke(main, ["classify", str(out), "-", "-o", "tsv"], input=texts)
    header, *lines = tsv.stdout.splitlines()
    assert header.split("\t") == ["line", "label", "p(neg)", "p(pos)", "text"] and len(lines) == 2
    table = runner.invoke(main, ["classify", str(out), "-"], input=texts)
    assert table.exit_code == 0 and "really boring story" in table.stdout
    csv_file = tmp_path / "t.csv"
    csv_file.write_text('id,body\n1,"the plot was superb, really"\n', encoding="utf-8")
    from_csv = runner.invoke(main, ["classify", str(out), str(csv_file), "--text-column", "body", "-o", "jsonl"])
    assert json.loads(from_csv.stdout)["label"] == "pos"


def test_evaluate_command_tables_json_and_picture(trained: tuple[Path, Path], tmp_path: Path) -> None:
    out, dev = trained
    runner = CliRunner()
    png = tmp_path / "cm.png"
    result = runner.invoke(main, ["evaluate", str(out), str(dev), "--json", "--png", str(png)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["accuracy"] == 1.0 and figures["confusion"] == [[20, 0], [0, 20]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = runner.invoke(main, ["evaluate", str(out), str(dev)])
    assert "macro average" in table.stdout and "confusion matrix" in table.stdout


def test_user_errors_are_one_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = trained
    runner = CliRunner()
    bad = tmp_path / "bad.tsv"
    bad.write_text("pos\tfine film\nno tab on this line\n", encoding="utf-8")
    result = runner.invoke(main, ["train", str(bad), "--model", "classify", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and f"{bad}, line 2: no TAB" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("maybe\tthe film\n", encoding="utf-8")
    result = runner.invoke(main, ["evaluate", str(out), str(unknown)])
    assert result.exit_code == 1 and "label 'maybe' is not one the model knows" in result.output
    result = runner.invoke(main, ["train", str(bad), "--model", "classify", "--bptt", "20", "--level", "word"])
    assert result.exit_code == 1 and "--bptt, --level do not apply to --model classify" in result.output
    result = runner.invoke(main, ["generate", str(out), "--length", "5"])
    assert result.exit_code == 1 and "not a language model" in result.output


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    """Stopped at step 5 (as Ctrl-C stops a run) and resumed, a run ends as the one that never stopped."""
    write_data(tmp_path / "train.tsv", 48, 3)
    options = dict(model="classify", hidden_size=4, emb_size=4, num_layers=1, batch_size=8, eval_interval=4,
                   max_steps=12, baselines=False)  # fmt: skip
    whole = train(TrainConfig.from_options((str(tmp_path / "train.tsv"),), out=str(tmp_path / "a"), **options))
    config = TrainConfig.from_options((str(tmp_path / "train.tsv"),), out=str(tmp_path / "b"), **options)
    stopped = train(config, stop_after=lambda step: step >= 5)
    assert stopped.status == "interrupted" and stopped.step == 5
    resumed = train(config, resume=True)
    assert resumed.resumed_from == 5 and resumed.step == 12
    assert resumed.last_valid_loss == pytest.approx(whole.last_valid_loss, rel=1e-6)


def test_multi_label_data(tmp_path: Path) -> None:
    rng = random.Random(0)
    lines = []
    for i in range(64):
        labels = [x for x, cue in (("good", GOOD), ("bad", BAD)) if (i >> (x == "bad")) & 1] or ["none"]
        words = rng.sample(FILLER, 4) + [rng.choice(GOOD if x == "good" else BAD) for x in labels if x != "none"]
        lines.append(" ".join(f"__label__{x}" for x in labels) + " " + " ".join(words))
    (tmp_path / "d.ft").write_text("\n".join(lines) + "\n", encoding="utf-8")
    charlm.train(tmp_path / "d.ft", model="classify", out=tmp_path / "m", max_steps=8, hidden_size=4, emb_size=4,
                 num_layers=1, batch_size=8)  # fmt: skip
    clf = charlm.load(tmp_path / "m")
    assert isinstance(clf, charlm.Classifier) and clf.multi_label and clf.labels == ("bad", "good", "none")
    p = clf.classify("the film was great and awful")
    assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
    assert set(p.labels) == {x for x, v in p.probabilities.items() if v >= 0.5}
    assert clf.evaluate(tmp_path / "d.ft").multi_label


def test_language_model_features_frozen(tmp_path: Path) -> None:
    text = "".join(f"{sentence(random.Random(i), GOOD if i % 2 else BAD)}\n" for i in range(40))
    tok = fit_tokenizer("char", text)
    torch.manual_seed(0)
    lm = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, hidden_size=8, emb_size=4, num_layers=1))
    write_inference_checkpoint(tmp_path / "lm", lm, tok)
    write_data(tmp_path / "train.tsv", 40, 4)
    result = charlm.train(tmp_path / "train.tsv", model="classify", out=tmp_path / "c", max_steps=6, batch_size=8,
                          lm_forward=str(tmp_path / "lm"), lm_backward=str(tmp_path / "lm"))  # fmt: skip
    assert result.step == 6
    clf = charlm.load(tmp_path / "c")
    assert isinstance(clf, charlm.Classifier)
    assert clf.model.config.encoder == "lm" and clf.model.config.pooling == "mean+max+last"
    for reader in clf.model.lms:  # frozen: the classifier holds the language model's weights unchanged
        assert torch.equal(reader.embedding.weight, lm.embedding.weight)
    probs = clf.probabilities(["the film was superb", "", "x" * 3000])
    assert probs.shape == (3, 2) and torch.allclose(torch.from_numpy(probs.sum(1)), torch.ones(3))
    charlm.train(tmp_path / "train.tsv", model="classify", out=tmp_path / "f", max_steps=3, batch_size=8,
                 lm_forward=str(tmp_path / "lm"), finetune=True, ngrams=False)  # fmt: skip
    tuned = charlm.load(tmp_path / "f", which="last")
    assert isinstance(tuned, charlm.Classifier) and tuned.model.config.finetune
    assert not torch.equal(tuned.model.lms[0].embedding.weight, lm.embedding.weight)  # --finetune trains the LM
    with pytest.raises(charlm.CheckpointError, match="holds a classify model, not a language model"):
        charlm.train(tmp_path / "train.tsv", model="classify", out=tmp_path / "d", max_steps=1,
                     lm_forward=str(tmp_path / "c"))  # fmt: skip
