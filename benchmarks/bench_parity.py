"""Speed parity of the three commands across refactors: the same job run by older trees and this one.

Issue 9 reshaped the trainer, the sampler and the CLI "with tests unchanged in
meaning" and speed within noise; issue 11 moved training onto memory-mapped token
files. This runs the same jobs with each source tree, alternating trees round by
round so drift in the machine's speed falls on all of them alike, and reports the
median of the rounds:

  train       `charlm train tinyshakespeare --max-steps N` at one fixed shape
              (2x384, batch 32, bptt 100, dropout 0.1 plain, fp32): tokens/s from metrics.jsonl
  generate    `charlm generate CKPT --length 2000` (sampling, seed 1): wall seconds
  perplexity  `charlm perplexity CKPT tinyshakespeare.txt` (default parallel mode): wall seconds

Trees are git commits checked out as worktrees under benchmarks/out/parity/ and run
with PYTHONPATH pointing at them. Nothing else heavy may run meanwhile.

    python benchmarks/bench_parity.py --trees ca62868,e29749d,HEAD --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "parity"
CORPUS = ROOT / "corpora" / "tinyshakespeare.txt"
SHAPE = ["--hidden", "384", "--dropout", "0.1", "--batch-size", "32", "--bptt", "100", "--lr", "3e-3",
         "--no-locked-dropout", "--precision", "fp32"]  # fmt: skip


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")


def checkout(commit: str) -> tuple[str, Path]:
    """(short hash, source directory) of a commit; HEAD's working tree is this checkout itself."""
    short = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True)
    name = short.stdout.strip()
    if commit == "HEAD":
        return name, ROOT
    tree = OUT / name
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), name], cwd=ROOT, check=True)
    return name, tree


def run(tree: Path, *args: str) -> float:
    env = os.environ | {"PYTHONPATH": str(tree), "CHARLM_CACHE_DIR": str(OUT / "cache")}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "charlm", *args], cwd=tree, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{tree}: charlm {' '.join(args)} failed: {p.stderr[-1500:]}")
    return time.perf_counter() - t0


def one_round(name: str, tree: Path, steps: int) -> dict[str, float]:
    out = OUT / f"run-{name}"
    run(tree, "train", str(CORPUS), "--out", str(out), "--overwrite", "--quiet", "--max-steps", str(steps),
        "--eval-interval", str(steps), "--seed", "1", *SHAPE)  # fmt: skip
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    tok_s = [r["tokens_per_s"] for r in train if r.get("type") == "train"][-1]
    gen = run(tree, "generate", str(out), "--length", "2000", "--seed", "1")
    ppl = run(tree, "perplexity", str(out), str(CORPUS), "--json")
    return {"train_tok_s": tok_s, "generate_s": gen, "perplexity_s": ppl}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", default="ca62868,e29749d,HEAD", help="commits, oldest first; HEAD = this tree")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    trees = [checkout(c) for c in a.trees.split(",")]
    rows: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for r in range(a.rounds):
        for name, tree in trees if r % 2 == 0 else trees[::-1]:
            rows[name].append(one_round(name, tree, a.steps))
            print(name, rows[name][-1], flush=True)
    base = trees[0][0]
    med = {n: {k: statistics.median(x[k] for x in v) for k in v[0]} for n, v in rows.items()}
    lines = [
        "# Speed parity across refactors (benchmarks/bench_parity.py)",
        "",
        f"- date: {datetime.now():%Y-%m-%d %H:%M}; CPU: {cpu_name()}, {os.cpu_count()} cores; "
        f"{a.rounds} rounds alternating the trees, medians; train {a.steps} steps at 2x384 b32 t100",
        "- train: tokens/s (higher is better); generate (2,000 tokens) and perplexity (tinyshakespeare, 1.1M "
        "tokens): wall seconds including start-up (lower is better); ratio against the first tree",
        "",
        "| tree | train tok/s | ratio | generate s | ratio | perplexity s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, m in med.items():
        b = med[base]
        lines.append(
            f"| {n} | {m['train_tok_s']:,.0f} | {m['train_tok_s'] / b['train_tok_s']:.3f} | "
            f"{m['generate_s']:.2f} | {m['generate_s'] / b['generate_s']:.3f} | "
            f"{m['perplexity_s']:.2f} | {m['perplexity_s'] / b['perplexity_s']:.3f} |"
        )
    lines += ["", "Every round:", "", "```", *(f"{n}: {json.dumps(v)}" for n, v in rows.items()), "```"]
    (HERE / "results_parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
