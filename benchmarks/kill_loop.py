"""A real kill -9 loop against `charlm train`: kill at random instants, check nothing was lost.

Each round starts `charlm train` in a child process (a new run with --overwrite on
even rounds, a --resume on odd ones), sends SIGKILL after a random delay, and
then checks what a user would rely on:
  - the checkpoint directory loads (best and last) and is one run (run ids agree);
  - `charlm perplexity` scores text with it;
  - `--resume` continues from it (one more step);
  - best's recorded validation loss is the lowest in metrics.jsonl.
tests/test_durability.py injects the kill before every single file operation;
this loop adds real signals at arbitrary instants (inside safetensors' writer,
between Python bytecodes, ...). Figures go to benchmarks/results_kill_loop.md.

    python benchmarks/kill_loop.py --rounds 40
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "kill_loop"
TRAIN = [
    "--hidden",
    "32",
    "--emb",
    "16",
    "--layers",
    "1",
    "--batch-size",
    "8",
    "--bptt",
    "32",
    "--eval-interval",
    "3",
    "--log-interval",
    "1",
    "--eval-streams",
    "4",
    "--device",
    "cpu",
    "--quiet",
]


def charlm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def check(run: Path, corpus: Path) -> str:
    """What a user relies on after a kill; '' when all holds, else what failed."""
    sys.path.insert(0, str(ROOT))
    from charlm.checkpoint import store as ckpt

    if not ckpt.holds_run(run):
        return ""  # killed before the first save of a new run: nothing to lose (the next round starts anew)
    try:
        for which in ("best", "last"):
            ckpt.load_for_inference(run, which)
    except Exception as exc:  # noqa: BLE001 - the benchmark reports any failure
        return f"load: {exc}"
    p = charlm("perplexity", str(run), str(corpus), "--json")
    if p.returncode != 0:
        return f"perplexity: {p.stderr.strip()[-300:]}"
    step = ckpt.load_training_state(run)[1]["trainer"]["step"]
    r = charlm("train", str(corpus), "--out", str(run), "--resume", "--max-steps", str(step + 1), "--quiet")
    if r.returncode != 0:
        return f"resume: {r.stderr.strip()[-300:]}"
    recorded = [m["valid_loss"] for m in ckpt.read_metrics(run) if m["type"] == "valid"]
    best = ckpt.weights_metadata(run, "best")
    if recorded and (best is None or abs(best["valid_loss"] - min(recorded)) > 1e-9):
        return f"best {best and best['valid_loss']} is not the best recorded {min(recorded)}"
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-delay", type=float, default=6.0, help="seconds; the kill lands uniformly in [0.5, this]")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    corpus = OUT / "corpus.txt"
    corpus.write_text((ROOT / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    run = OUT / "run"
    failures, t0 = [], time.time()
    for i in range(args.rounds):
        mode = (
            ["--resume", "--max-steps", "100000"]
            if i % 2 and run.exists()
            else ["--overwrite", "--max-steps", "100000", "--seed", str(i)]
        )
        child = subprocess.Popen(
            [sys.executable, "-m", "charlm", "train", str(corpus), "--out", str(run), *TRAIN, *mode],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        delay = rng.uniform(0.5, args.max_delay)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        problem = check(run, corpus)
        print(
            json.dumps(
                {"round": i, "mode": mode[0], "kill_after_s": round(delay, 2), "ok": not problem, "problem": problem}
            ),
            flush=True,
        )
        if problem:
            failures.append((i, problem))
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    (HERE / "results_kill_loop.md").write_text(
        "# kill -9 loop (benchmarks/kill_loop.py)\n\nRun "
        f"{datetime.now():%Y-%m-%d %H:%M}, {cpu}, {args.rounds} rounds, "
        f"kills uniform in [0.5, {args.max_delay}] s after start, {time.time() - t0:.0f} s in all.\n\n"
        f"Rounds where the directory did not load, score, resume, or kept a worse best: **{len(failures)}**.\n"
        + "".join(f"- round {i}: {p}\n" for i, p in failures)
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
