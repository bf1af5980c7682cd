"""Text classification on movie-review polarity (issue 26): accuracy under a time budget, and speed.

    python benchmarks/bench_classify.py accuracy --budget 5m --out /tmp/clf       # defaults only
    python benchmarks/bench_classify.py lm --budget 6m --out /tmp/lm-forward      # a char LM on the train texts
    python benchmarks/bench_classify.py lm --budget 6m --out /tmp/lm-backward --reverse
    python benchmarks/bench_classify.py accuracy --budget 5m --out /tmp/clf-lm -- --lm-forward /tmp/lm-forward ...
    python benchmarks/bench_classify.py speed --checkpoint /tmp/clf
    python benchmarks/bench_classify.py nb                                        # naive Bayes alone

`accuracy` trains on ../shared/corpora/rt-polarity/train.tsv with charlm's defaults (its own validation
share of the training texts chooses `best`; the dev file is never seen in training) and reports dev
accuracy and macro-F1 with `charlm evaluate`. `lm` trains a char language model on the training texts
(labels dropped; `--reverse`: each line reversed, for a backward model). `speed` times `charlm classify`
on 10,000 dev sentences (dev repeated), model loading included, and a yardstick in the same session: a bare
torch bidirectional LSTM of the same width over the same texts' padded word ids (no reading, no tokenizing).
Each prints a markdown section for benchmarks/results_classify.md. Run the timed ones alone:
`flock -x /work/bench.lock python benchmarks/bench_classify.py ...`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

import charlm
from charlm.checkpoint import read_metrics
from charlm.classify import ClassifierVocab, naive_bayes, read_examples, report, words_of
from charlm.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "rt-polarity"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def header(title: str) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n## {title} ({now})\n\nCPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")


def run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    if result.exit_code != 0:
        sys.exit(f"charlm {' '.join(args)} failed: {result.output}")
    return result.stdout


def accuracy(ns: argparse.Namespace, extra: list[str]) -> None:
    t0 = time.perf_counter()
    run(["train", str(DATA / "train.tsv"), "--model", "classify", "--time-budget", ns.budget, "--out", ns.out,
         "--overwrite", "--quiet", *extra])  # fmt: skip
    seconds = time.perf_counter() - t0
    figures = json.loads(run(["evaluate", ns.out, str(DATA / "dev.tsv"), "--json"]))
    clf = charlm.load(ns.out)
    assert isinstance(clf, charlm.Classifier)
    header(f"accuracy: `charlm train train.tsv --model classify --time-budget {ns.budget} {' '.join(extra)}`")
    print(f"model: {clf.model.config.summary()}; {clf.model.num_parameters():,} parameters; "
          f"the run took {seconds:.0f} s (reading the data and writing the checkpoint included)\n")  # fmt: skip
    print("| dev texts | accuracy | macro-F1 | loss |\n|---:|---:|---:|---:|")
    print(
        f"| {figures['examples']:,} | {figures['accuracy']:.4f} | {figures['macro_f1']:.4f} | {figures['loss']:.4f} |"
    )


def lm(ns: argparse.Namespace, extra: list[str]) -> None:
    texts = [line.split("\t", 1)[1] for line in (DATA / "train.tsv").read_text(encoding="utf-8").splitlines()]
    if ns.reverse:
        texts = [t[::-1] for t in texts]
    corpus = Path(tempfile.mkdtemp()) / ("rt-train-reversed.txt" if ns.reverse else "rt-train.txt")
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    run(["train", str(corpus), "--time-budget", ns.budget, "--out", ns.out, "--overwrite", "--quiet", *extra])
    seconds = time.perf_counter() - t0
    model = charlm.load(ns.out)
    assert isinstance(model, charlm.LanguageModel)
    best = min(r["valid_loss"] for r in read_metrics(Path(ns.out)) if r.get("type") == "valid")
    header(f"language model: `charlm train {corpus.name} --time-budget {ns.budget} {' '.join(extra)}`")
    print(f"{'backward (each line reversed)' if ns.reverse else 'forward'} char LM on the {len(texts):,} training "
          f"texts of train.tsv (labels dropped; {sum(map(len, texts)):,} characters): "
          f"{model.info.model_config.summary()}, "
          f"best validation {best / 0.6931:.3f} bits/char, {seconds:.0f} s\n")  # fmt: skip


def speed(ns: argparse.Namespace, extra: list[str]) -> None:
    texts = [line.split("\t", 1)[1] for line in (DATA / "dev.tsv").read_text(encoding="utf-8").splitlines()]
    texts = (texts * (ns.sentences // len(texts) + 1))[: ns.sentences]
    file = Path(tempfile.mkdtemp()) / "texts.txt"
    file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    run(["classify", ns.checkpoint, str(file), "-o", "tsv"])  # untimed: warms the caches
    best = float("inf")
    for _ in range(ns.repeats):
        t0 = time.perf_counter()
        out = run(["classify", ns.checkpoint, str(file), "-o", "tsv"])
        best = min(best, time.perf_counter() - t0)
    assert len(out.splitlines()) == len(texts) + 1
    clf = charlm.load(ns.checkpoint)
    assert isinstance(clf, charlm.Classifier)
    c = clf.model.config
    yardstick = bare_lstm(clf, texts, ns.repeats)
    header(f"speed: `charlm classify CKPT texts.txt -o tsv`, {len(texts):,} sentences")
    print(f"model: {c.summary()}, {clf.model.num_parameters():,} parameters\n")
    print(f"| what | seconds (best of {ns.repeats}) | sentences/s |\n|---|---:|---:|")
    print(f"| `charlm classify` (load, read, tokenize, classify, write TSV) | {best:.2f} | {len(texts) / best:,.0f} |")
    print(f"| yardstick: bare torch BiLSTM {c.num_layers} x {c.hidden_size} forward, same padded batches | "
          f"{yardstick:.2f} | {len(texts) / yardstick:,.0f} |")  # fmt: skip
    print(f"\nratio (charlm classify / yardstick, sentences per second): {yardstick / best:.2f}")


def bare_lstm(clf: charlm.Classifier, texts: list[str], repeats: int) -> float:
    """Seconds a plain torch bidirectional LSTM (the classifier's width and depth, random weights) takes over the
    texts' word ids, already padded into the same sorted batches of 256: the network's floor."""
    c = clf.model.config
    rnn = torch.nn.LSTM(c.word_emb + c.char_channels, c.hidden_size, c.num_layers, batch_first=True,
                        bidirectional=True).eval()  # fmt: skip
    lengths = sorted(len(words_of(t)) for t in texts)
    batches = [torch.randn(len(lengths[s : s + 256]), max(lengths[s : s + 256]) or 1, rnn.input_size)
               for s in range(0, len(lengths), 256)]  # fmt: skip
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            for x in batches:
                rnn(x)
            best = min(best, time.perf_counter() - t0)
    return best


def naive_bayes_alone(ns: argparse.Namespace, extra: list[str]) -> None:
    """The stacked naive Bayes model by itself: fitted on every training sentence, scored on dev (seconds)."""
    train = read_examples(DATA / "train.tsv")
    dev = read_examples(DATA / "dev.tsv")
    labels = sorted({x for e in train for x in e.labels})
    vocab = ClassifierVocab.fit([e.text for e in train], labels, ngrams=True)
    targets = vocab.label_targets([e.labels for e in train], True).numpy()
    weights, bias = naive_bayes.fit_table(vocab.ngram_sets([e.text for e in train]), targets, len(vocab.ngrams), False)
    predicted = naive_bayes.scores(vocab.ngram_sets([e.text for e in dev]), weights, bias).argmax(1).numpy()
    r = report(np.array([vocab.label_index[e.labels[0]] for e in dev]), predicted, tuple(labels))
    header("naive Bayes alone (binarized unigrams and bigrams, add-one), fitted on all of train.tsv")
    print(f"{len(vocab.ngrams):,} n-grams; dev accuracy {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accuracy", "lm", "speed", "nb"])
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--out", default="/tmp/bench-classify")
    parser.add_argument("--reverse", action="store_true")
    parser.add_argument("--checkpoint", default="/tmp/bench-classify")
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    ns, extra = parser.parse_known_args()
    extra = [x for x in extra if x != "--"]
    {"accuracy": accuracy, "lm": lm, "speed": speed, "nb": naive_bayes_alone}[ns.what](ns, extra)


if __name__ == "__main__":
    main_()
