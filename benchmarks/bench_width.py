"""Wider at equal tokens (issue 21): is a wider model at least as good as a narrower one after the same steps?

    python benchmarks/bench_width.py [--level char|word] [--widths 256,512,768,1024,1536] [--steps 200]

For each width, `charlm train` on the same text from the same seed in fp32, with every option the
widths do not decide fixed (batch 16 x 100 for char, 16 x 50 for word, lr 5e-3 with charlm's warm-up
and cosine schedule over the run, dropout 0.1, clip 5), and the validation loss (its first 32,768 tokens)
at each evaluation
recorded: the same tokens seen by every width. The figure does not depend on the machine's speed
(it counts steps, not seconds), so other work may share the machine. Char level reads War and Peace
and tinyshakespeare joined (4.4M characters, the largest bundled text); word level War and Peace with
`--pretokenize punct`. Results are appended to benchmarks/results_width.jsonl; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "width"
RESULTS = HERE / "results_width.jsonl"


def text_for(level: str) -> tuple[Path, list[str]]:
    OUT.mkdir(parents=True, exist_ok=True)
    if level == "char":
        path = OUT / "tolstoy+shakespeare.txt"
        if not path.exists():
            corpora = ROOT / "corpora"
            path.write_text(
                (corpora / "war_and_peace.txt").read_text(encoding="utf-8-sig")
                + (corpora / "tinyshakespeare.txt").read_text(encoding="utf-8"),
                encoding="utf-8",
            )
        return path, ["--bptt", "100"]
    return ROOT / "corpora" / "war_and_peace.txt", ["--level", "word", "--pretokenize", "punct", "--bptt", "50"]


def run(level: str, width: int, steps: int, eval_every: int) -> dict:
    text, extra = text_for(level)
    out = OUT / f"{level}-{width}-{steps}"
    cmd = [sys.executable, "-m", "charlm", "train", str(text), "--out", str(out), "--overwrite", "--quiet",
           "--hidden", str(width), "--precision", "fp32", "--max-steps", str(steps), "--eval-interval",
           str(eval_every), "--batch-size", "16", "--lr", "5e-3", "--dropout", "0.1", "--seed", "1",
           "--eval-tokens", "32768", "--no-baselines", "--no-samples", "--cache-dir", str(OUT / "cache"),
           *extra]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"charlm failed at width {width}: {p.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = {r["step"]: round(r["valid_loss"], 4) for r in records if r["type"] == "valid"}
    return {"level": level, "width": width, "steps": steps, "curve": curve, "seconds": round(time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--level", choices=["char", "word"], default="char")
    ap.add_argument("--widths", default="256,512,768,1024,1536")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=100)
    a = ap.parse_args()
    rows = []
    for w in (int(x) for x in a.widths.split(",")):
        row = run(a.level, w, a.steps, a.eval_every)
        rows.append(row)
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    steps = sorted(rows[0]["curve"])
    print("| width | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---" * (len(steps) + 1) + "|")
    for r in rows:
        print(f"| 2x{r['width']} | " + " | ".join(f"{r['curve'][s]:.4f}" for s in steps) + " |")


if __name__ == "__main__":
    main()
