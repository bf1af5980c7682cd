"""Word models on a CPU (issue 13), run by hand on a quiet machine.

    python benchmarks/bench_word.py [--steps 20] [--rounds 5] [--quality-steps 200] [--skip-a]
                                    [--vs-tree 1cc06ff^ --tree-steps 150 --tree-rounds 3]
                                    [--budget 10m] [--wp] [--no-wikitext] [--out benchmarks/results_word.md]

(a) Throughput, measured in one run: the real training step (`charlm.training.tasks.lm.train_step`:
    forward, loss, backward, clip, AdamW) of the README's word configuration (2x650
    LSTM, embedding 650 tied, bptt 35, batch 20, dropout 0.5) on wikitext-2.valid.txt,
    with the full softmax (today's path) and with the adaptive softmax (clusters from
    the training text's frequencies, as `charlm train` chooses them). The two models
    take turns, `--rounds` blocks of `--steps` steps each, on the same windows, and
    each one's median block is reported, so a busy spell of the machine hits both.
    With `--quality-steps N` both then train N steps from the same initialisation on
    the same windows and are scored on the first 20,000 tokens of
    wikitext-2.test.txt: perplexity per token seen.
(b) With `--budget`: `charlm train` with `--level word` and no other model option
    on wikitext-2.valid.txt (validated on wikitext-2.test.txt, so the vocabulary is
    the whole training file's, as in the issue's n-gram figures), charlm's KN 5-gram
    on the same text (`--model kn --order 5`), and `charlm perplexity --which last
    --interpolate KN5` on the test file: RNN, 5-gram and mixture (last weights, not
    best, so the test text chooses nothing but the mixture weight, which for this
    split is chosen on the test text: the issue's split has no third text). With `--wp`
    the same on war_and_peace.txt with `--pretokenize punct`, cut by lines into the
    first 85% (train), the next 5% (validation, and the mixture weight) and the last
    10% (test).

(c) With `--vs-tree COMMIT` (the tree the issue was measured on: 1cc06ff^): the
    README's word example itself, `charlm train wikitext-2.valid.txt --level word
    --hidden 650 --emb 650 --tie-weights --dropout 0.5 --bptt 35 --batch-size 20`,
    for `--tree-steps` steps at --lr 3e-3, the old tree in fp32 and this one in
    `--tree-precision` (fp32, or auto: bf16 where it measures faster; auto
    measures only in runs of 300+ steps); otherwise the same settings for both;
    this tree also turns off the regularisers its word defaults add, which the old
    tree did not have), run by that tree (a git worktree under benchmarks/out/parity/) and
    by this one in turns, `--tree-rounds` times (round r: --seed r for both): tokens/s from each run's
    metrics.jsonl between its first and last log line, step 10 to the end
    (medians), and the perplexity of its last weights on the first 20,000 tokens
    of wikitext-2.test.txt, scored by each tree's own `charlm perplexity`:
    perplexity per token seen. This is the issue's "at least 2x today's,
    measured in one run against today's code path".

Writes the tables to `--out` (and prints them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_parity import checkout, cpu_name  # this directory: run as a script

from charlm.cli.common import parse_duration
from charlm.data.batching import batchify, get_batch
from charlm.evaluation.scoring import context_id, evaluate_ids
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.training import PreparedData, TrainConfig, autosize, flat_options, prepare_data
from charlm.training.optim import make_optimizer
from charlm.training.tasks.lm import train_step

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "corpora" / "wikitext-2.valid.txt"
TEST = ROOT / "corpora" / "wikitext-2.test.txt"
WP = ROOT / "corpora" / "war_and_peace.txt"
OUT = ROOT / "benchmarks" / "out"


def readme_config() -> TrainConfig:
    """The README's word example: 2x650, embedding 650 tied, dropout 0.5, bptt 35, batch 20."""
    return TrainConfig.from_options(
        corpus=(str(TRAIN),), valid=(str(TEST),), level="word", hidden_size=650, emb_size=650, tie_weights=True,
        dropout=0.5, dropout_input=0.0, dropout_embed=0.0, weight_drop=0.0, ar=0.0, tar=0.0,
        bptt=35, batch_size=20, lr=1e-3, adaptive_softmax=False,
    )  # fmt: skip


def throughput(full: TrainConfig, data: PreparedData, steps: int, rounds: int, quality_steps: int) -> dict:
    """Tokens/s of full and adaptive softmax taking turns on the same windows; optionally ppl after N steps each."""
    counts = np.bincount(np.asarray(data.train_ids), minlength=data.tokenizer.vocab_size)
    adaptive, _ = autosize.output_layer(full.replace(adaptive_softmax=True), counts)
    configs = {"full softmax": full, "adaptive softmax": adaptive}
    vocab = data.tokenizer.vocab_size
    rows = batchify(np.asarray(data.train_ids), full.task.batch_size or 20)
    bptt = full.task.bptt or 35
    runs = {}
    for name, c in configs.items():
        torch.manual_seed(0)
        model = RNNLanguageModel(c.model_config(vocab)).train()
        runs[name] = {"config": c, "model": model, "opt": make_optimizer(c, model), "hidden": None, "times": []}

    def block(run: dict, start: int, n: int) -> float:
        t0 = time.perf_counter()
        for i in range(start, start + n):
            x, y = get_batch(rows, (i * bptt) % (rows.shape[1] - bptt - 1), bptt)
            loss, run["hidden"] = train_step(run["model"], run["opt"], None, x, y, run["hidden"], run["config"], None)
        float(loss)
        return time.perf_counter() - t0

    for run in runs.values():
        block(run, 0, 2)  # warm-up
    for r in range(rounds):
        for run in runs.values():
            run["times"].append(block(run, 2 + r * steps, steps))
    out = {}
    for name, run in runs.items():
        med = statistics.median(run["times"])
        out[name] = {
            "tokens_per_s": steps * (full.task.batch_size or 20) * bptt / med,
            "cutoffs": run["config"].model.adaptive_cutoffs,
        }
    if quality_steps:
        test_ids = data.tokenizer.encode_array(TEST.read_text(encoding="utf-8")[:150_000])[:20_000]
        for name, c in configs.items():  # fresh models from the same seed, the same windows
            torch.manual_seed(0)
            model = RNNLanguageModel(c.model_config(vocab)).train()
            opt, hidden = make_optimizer(c, model), None
            for i in range(quality_steps):
                x, y = get_batch(rows, (i * bptt) % (rows.shape[1] - bptt - 1), bptt)
                _, hidden = train_step(model, opt, None, x, y, hidden, c, None)
            score = evaluate_ids(model.eval(), test_ids, context_id(data.tokenizer), chars=0, nbytes=0, oov=0)
            out[name]["ppl"] = math.exp(score.loss)
            out[name]["tokens_seen"] = quality_steps * (full.task.batch_size or 20) * bptt
    return out


def output_layer_times(ids: np.ndarray, vocabs: tuple[int, ...] = (2000, 3000, 5000, 13_777)) -> list[tuple]:
    """The output layer alone (loss forward + backward, 700 tokens of wikitext-2), full vs adaptive, by
    vocabulary size (the most frequent ids kept) and width: what ADAPTIVE_MIN_VOCAB was set from."""
    rows = []
    for vocab in vocabs:
        capped = np.where(ids < vocab, ids, 0).astype(np.int64)  # rarer words become <unk>, as --max-vocab does
        y = torch.from_numpy(capped[1000:1700])
        cuts = autosize.choose_cutoffs(np.bincount(capped, minlength=vocab))
        for width in (256, 650):
            ms = []
            for c in (None, cuts):
                torch.manual_seed(0)
                m = RNNLanguageModel(
                    ModelConfig(vocab_size=vocab, hidden_size=width, emb_size=width, tie_weights=True,
                                adaptive_cutoffs=c)
                )  # fmt: skip
                x = torch.randn(700, width, requires_grad=True)
                best = float("inf")
                for _ in range(5):
                    t0 = time.perf_counter()
                    m.loss(x, y).backward()
                    best = min(best, time.perf_counter() - t0)
                ms.append(1000 * best)
                if cuts is None:  # no split pays at this size: only the full softmax
                    break
            rows.append((vocab, width, cuts, ms[0], ms[1] if len(ms) > 1 else None))
    return rows


def charlm(*args: str) -> str:
    cmd = [sys.executable, "-m", "charlm", *args]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return done.stdout


def split3(src: Path, name: str) -> tuple[Path, Path, Path]:
    """A corpus cut by lines: the first 85% to train, the next 5% to validate (and to choose the
    mixture weight on), the last 10% held out as the test text."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    a, b = int(len(lines) * 0.85), int(len(lines) * 0.90)
    (OUT / "splits").mkdir(parents=True, exist_ok=True)
    paths = []
    for part, chunk in (("train", lines[:a]), ("dev", lines[a:b]), ("test", lines[b:])):
        path = OUT / "splits" / f"{name}.{part}.txt"
        path.write_text("".join(chunk), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1], paths[2]


def quality(name: str, train: Path, dev: Path, test: Path, extra: list[str], budget: str) -> dict:
    """`charlm train --level word` with defaults only, charlm's own KN 5-gram on the same text and
    tokenizer, and `charlm perplexity --interpolate` of the RNN's last weights with it on `test`
    (the mixture weight chosen on `dev`, the runs' validation text)."""
    rnn, kn = OUT / f"word_{name}", OUT / f"kn5_{name}"
    common = [str(train), "--valid", str(dev), "--level", "word", *extra, "--overwrite", "--quiet"]
    t0 = time.perf_counter()
    charlm("train", *common, "--time-budget", budget, "--out", str(rnn), "--sample-length", "0")
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    charlm("train", *common, "--model", "kn", "--order", "5", "--out", str(kn))
    kn_wall = time.perf_counter() - t0
    meta = json.loads((rnn / "checkpoint.json").read_text())
    metrics = [json.loads(line) for line in (rnn / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_recs = [m for m in metrics if m.get("type") == "train"]
    keys = ("bptt", "batch_size", "lr", "dropout", "dropout_input", "dropout_embed", "weight_drop", "ar", "tar")
    mixed = json.loads(charlm("perplexity", str(rnn), str(test), "--which", "last", "--interpolate", str(kn), "--json"))
    return {
        "model": meta["model"],
        "train": {k: flat_options(meta["train"])[k] for k in keys},
        "steps": max((m.get("step", 0) for m in metrics), default=0),
        "tokens_per_s": train_recs[-1]["tokens_per_s"] if train_recs else 0.0,
        "wall_s": wall,
        "kn_wall_s": kn_wall,
        "mixed": mixed,
    }


README_WORD = ["--level", "word", "--hidden", "650", "--emb", "650", "--tie-weights", "--dropout", "0.5",
               "--bptt", "35", "--batch-size", "20"]  # fmt: skip
SAME = ["--lr", "3e-3", "--quiet", "--overwrite"]
NO_EXTRA_REGULARISERS = ["--dropout-input", "0", "--dropout-embed", "0", "--weight-drop", "0", "--ar", "0",
                         "--tar", "0", "--weight-decay", "0"]  # fmt: skip


def tree_run(tree: Path, extra: list[str], steps: int, test: Path, seed: int) -> dict:
    """The README's word example run by one source tree for `steps` steps: tokens/s and perplexity on `test`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "CHARLM_CACHE_DIR": str(OUT / "trees" / "cache")}
    out = OUT / "trees" / f"run-{tree.name}"
    cmd = [sys.executable, "-m", "charlm", "train", str(TRAIN), "--valid", str(test), *README_WORD, *SAME, *extra,
           "--max-steps", str(steps), "--eval-interval", str(steps), "--log-interval", "10", "--seed", str(seed),
           "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in recs if r.get("type") == "train"]
    first, last = train[0], train[-1]  # from the first log line on: start-up and warm-up excluded
    tok_s = (last["step"] - first["step"]) * 700 / (last["elapsed"] - first["elapsed"])
    ppl = subprocess.run([sys.executable, "-m", "charlm", "perplexity", str(out), str(test), "--which", "last",
                          "--json"], cwd=tree, env=env, check=True, capture_output=True, text=True)  # fmt: skip
    return {"tokens_per_s": tok_s, "ppl": json.loads(ppl.stdout)["total"]["perplexity"]}


def versus_tree(commit: str, steps: int, rounds: int, precision: str = "fp32") -> list[str]:
    """(c): the README's word example, the issue's tree against this one, in turns."""
    name, old = checkout(commit)  # a worktree under benchmarks/out/parity/, as bench_parity.py keeps them
    test = OUT / "trees" / "wikitext-2.test.20k.txt"
    test.parent.mkdir(parents=True, exist_ok=True)
    words = TEST.read_text(encoding="utf-8").split(" ")
    test.write_text(" ".join(words[:20_000]), encoding="utf-8")  # about 20,000 tokens
    trees = [
        (f"{name} (issue's tree, fp32)", old, ["--precision", "fp32"]),
        (f"this tree, --precision {precision}", ROOT, [*NO_EXTRA_REGULARISERS, "--precision", precision]),
    ]
    got: dict[str, list[dict]] = {label: [] for label, _, _ in trees}
    for r in range(rounds):
        for label, tree, extra in trees if r % 2 == 0 else trees[::-1]:
            got[label].append(tree_run(tree, extra, steps, test, seed=r + 1))
            print(label, got[label][-1], flush=True)
    base = statistics.median(x["tokens_per_s"] for x in got[trees[0][0]])
    lines = [
        f"## (c) README's word example: the issue's tree ({name}) against this tree, in turns",
        "",
        f"`charlm train wikitext-2.valid.txt {' '.join(README_WORD)} {' '.join(SAME[:2])}` for {steps} steps "
        f"({steps * 700:,} tokens), {rounds} rounds alternating the trees (medians); this tree with "
        f"`{' '.join(NO_EXTRA_REGULARISERS)}` so both train the same model; round r uses --seed r for both "
        "trees. Perplexity: last weights on the first 20,000 words of wikitext-2.test.txt, each tree's own "
        "`charlm perplexity`.",
        "",
        "| tree | tokens/s (median) | speed-up | every round tok/s | test ppl (seed 1, 2, ...) | median ppl |",
        "|---|---|---|---|---|---|",
    ]
    for label, runs in got.items():
        med = statistics.median(x["tokens_per_s"] for x in runs)
        speeds = ", ".join(f"{x['tokens_per_s']:,.0f}" for x in runs)
        ppls = ", ".join(f"{x['ppl']:.1f}" for x in runs)
        mid = statistics.median(x["ppl"] for x in runs)
        lines.append(f"| {label} | {med:,.0f} | {med / base:.2f}x | {speeds} | {ppls} | {mid:.1f} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="timed blocks per output layer, taking turns")
    ap.add_argument("--quality-steps", type=int, default=0, help="train each N steps and score the test text")
    ap.add_argument("--budget", default=None, help="also run the defaults-only quality run with this budget (10m)")
    ap.add_argument("--wp", action="store_true", help="with --budget: also war_and_peace.txt, --pretokenize punct")
    ap.add_argument("--no-wikitext", action="store_true", help="with --budget: leave out the WikiText-2 run")
    ap.add_argument("--vs-tree", default=None, help="(c): the README example against this commit (1cc06ff^)")
    ap.add_argument("--tree-steps", type=int, default=150)
    ap.add_argument("--tree-rounds", type=int, default=3)
    ap.add_argument("--tree-precision", default="fp32", help="(c): this tree's --precision (the old one: fp32)")
    ap.add_argument("--skip-a", action="store_true", help="leave out (a), the in-process throughput tables")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_word.md"))
    args = ap.parse_args()

    cpu = cpu_name()
    lines = [
        "# Word models on a CPU (benchmarks/bench_word.py)",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}. Command: `python benchmarks/bench_word.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    if args.vs_tree:
        lines += versus_tree(args.vs_tree, args.tree_steps, args.tree_rounds, args.tree_precision)
        print("\n".join(lines), flush=True)
    if not args.skip_a:
        full = readme_config()
        data = prepare_data(full)
        res = throughput(full, data, args.steps, args.rounds, args.quality_steps)
        base = res["full softmax"]["tokens_per_s"]
        lines += [
            "## (a) Training throughput, README's 2x650 tied word model, wikitext-2.valid.txt",
            "",
            f"vocabulary {data.tokenizer.vocab_size:,}; batch 20 x bptt 35; median of {args.rounds} blocks of "
            f"{args.steps} steps each, the two output layers taking turns.",
            "",
            "| output layer | clusters | tokens/s | speed-up | test ppl after N steps (20k tokens) |",
            "|---|---|---|---|---|",
        ]
        for name, r in res.items():
            ppl = f"{r['ppl']:.1f} ({r['tokens_seen']:,} tokens seen)" if "ppl" in r else "-"
            cuts = str(list(r["cutoffs"])) if r["cutoffs"] else "-"
            lines.append(f"| {name} | {cuts} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.2f}x | {ppl} |")
        lines += [
            "",
            "Output layer alone (loss forward + backward of 700 tokens; ms, best of 5), by vocabulary size "
            "(wikitext-2's most frequent words) and width; `charlm train` turns the adaptive softmax on for "
            f"word vocabularies of {autosize.ADAPTIVE_MIN_VOCAB:,}+:",
            "",
            "| vocabulary | width | clusters | full ms | adaptive ms | speed-up |",
            "|---|---|---|---|---|---|",
        ]
        for vocab, width, cuts, full_ms, ada_ms in output_layer_times(np.asarray(data.train_ids)):
            if ada_ms is None:
                lines.append(f"| {vocab:,} | {width} | none pays | {full_ms:.1f} | - | - |")
            else:
                lines.append(
                    f"| {vocab:,} | {width} | {list(cuts)} | {full_ms:.1f} | {ada_ms:.1f} | {full_ms / ada_ms:.1f}x |"
                )
        lines.append("")
        print("\n".join(lines), flush=True)
    if args.budget:
        parse_duration(args.budget)
        runs = []
        if not args.no_wikitext:  # the split: no dev text, the test text validates
            runs.append(("wikitext2", TRAIN, TEST, TEST, []))
        if args.wp:
            runs.append(("war_and_peace", *split3(WP, "war_and_peace"), ["--pretokenize", "punct"]))
        lines += [
            f"## (b) `charlm train --level word` with defaults only, budget {args.budget}, against KN 5-gram",
            "",
            "The RNN's last weights, charlm's own KN 5-gram (same training text, same tokenizer) and their "
            "mixture (`charlm perplexity --interpolate`, weight chosen on the validation text) on the test text.",
            "",
            "| corpus | chosen | steps | tokens/s | RNN ppl | KN5 ppl | mixture ppl (w) | mixture vs KN5 | OOV |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, train, dev, test, extra in runs:
            q = quality(name, train, dev, test, extra, args.budget)
            m, t, tot = q["model"], q["train"], q["mixed"]["total"]
            chosen = (
                f"{m['num_layers']}x{m['hidden_size']} emb {m['emb_size']}{' tied' if m['tie_weights'] else ''}, "
                f"vocab {m['vocab_size']:,}, clusters {m['adaptive_cutoffs']}, bptt {t['bptt']}, batch "
                f"{t['batch_size']}, lr {t['lr']:g}, dropout {t['dropout']:g}/{t['dropout_input']:g}/"
                f"{t['dropout_embed']:g}, weight drop {t['weight_drop']:g}, AR/TAR {t['ar']:g}/{t['tar']:g}"
            )
            rnn, kn, mix = (tot[k]["perplexity"] for k in ("checkpoint", "interpolate", "mixture"))
            w = q["mixed"]["interpolate"]["weight"]
            lines.append(
                f"| {name} | {chosen} | {q['steps']:,} | {q['tokens_per_s']:,.0f} | {rnn:.2f} | {kn:.2f} | "
                f"{mix:.2f} ({w:g}) | {100 * (mix / kn - 1):+.1f}% | {100 * tot['checkpoint']['oov_rate']:.1f}% |"
            )
            print(lines[-1], json.dumps(q), flush=True)
        lines.append("")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
