"""Defaults on a matrix of texts, not on one (issue 21), run by hand on a quiet machine.

    python benchmarks/bench_matrix.py [--budgets 10m,3m] [--only NAME,...] [--char]

Word level: five texts of about 50k to 900k training tokens, tokenized (WikiText-2)
and raw (`--pretokenize punct`: Shakespeare, Tolstoy), each cut by lines into the
first 85% (train), the next 5% (validation: best checkpoint, the mixture weight)
and the last 10% (test). For each text and budget: `charlm train --level word`
with defaults only, charlm's KN 5-gram on the same text and tokenizer, and
`charlm perplexity BEST TEST --interpolate KN5` (RNN, KN and mixture on the test
part). With --char: the same at char level on a 100 KB text and tinyshakespeare
(test figure of `charlm perplexity`; the reference trainer is
benchmarks/bench_quality.py's). Each finished run appends one JSON line to
benchmarks/results_matrix.jsonl; benchmarks/results_matrix.md holds the tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "matrix"
CORPORA = ROOT / "corpora"


def words(path: Path, first: int | None = None, skip: int = 0) -> str:
    """Whole lines of `path` from its `skip`-th word up to about `first` words."""
    lines = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").splitlines(keepends=True)
    out, seen = [], 0
    for line in lines:
        n = len(line.split())
        if seen >= skip:
            out.append(line)
        seen += n
        if first is not None and seen >= skip + first:
            break
    return "".join(out)


# name -> (text, extra options). Sizes are training tokens after the 85% cut.
WORD = {
    "wt2-60k": (lambda: words(CORPORA / "wikitext-2.valid.txt", 70_000), []),
    "shakespeare-punct": (lambda: words(CORPORA / "tinyshakespeare.txt"), ["--pretokenize", "punct"]),
    "wt2-valid": (lambda: words(CORPORA / "wikitext-2.valid.txt"), []),
    "war-and-peace-punct": (lambda: words(CORPORA / "war_and_peace.txt"), ["--pretokenize", "punct"]),
    "tolstoy+shakespeare-punct": (
        lambda: words(CORPORA / "war_and_peace.txt") + words(CORPORA / "tinyshakespeare.txt"),
        ["--pretokenize", "punct"],
    ),
}
CHAR = {
    "wp-100KB": (lambda: (CORPORA / "war_and_peace.txt").read_bytes()[3:103_000].decode("utf-8", "ignore"), []),
    "tinyshakespeare": (lambda: (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8"), []),
}


def split3(name: str, text: str) -> tuple[Path, Path, Path]:
    lines = text.splitlines(keepends=True)
    a, b = int(len(lines) * 0.85), int(len(lines) * 0.90)
    (OUT / "splits").mkdir(parents=True, exist_ok=True)
    paths = []
    for part, chunk in (("train", lines[:a]), ("dev", lines[a:b]), ("test", lines[b:])):
        path = OUT / "splits" / f"{name}.{part}.txt"
        path.write_text("".join(chunk), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1], paths[2]


def charlm(*args: str, both: bool = False) -> str:
    """Run `python -m charlm ARGS`: its standard output (and error, with both=True)."""
    cmd = [sys.executable, "-m", "charlm", *args]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    return done.stdout + done.stderr if both else done.stdout


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


def run_one(
    level: str, name: str, text: str, extra: list[str], budget: str, kn_order: int, forced: Sequence[str] = ()
) -> dict:
    """One text and budget: the RNN with defaults (and `forced` options), KN, and their mixture on the test part."""
    train, dev, test = split3(name, text)
    tag = f"{level}_{name}_{budget}" + "".join(forced).replace("-", "")
    rnn, kn = OUT / f"rnn_{tag}", OUT / f"kn_{level}_{name}"
    common = [str(train), "--valid", str(dev), "--level", level, *extra, "--overwrite"]
    t0 = time.perf_counter()
    shown = charlm(
        "train", *common, *forced, "--time-budget", budget, "--out", str(rnn), "--sample-length", "0", both=True
    )
    wall = time.perf_counter() - t0
    if not (kn / "checkpoint.json").exists():
        charlm("train", *common, "--model", "kn", "--order", str(kn_order), "--out", str(kn), "--quiet")
    chosen = re.search(r"chosen for this run: (.*)", shown)
    metrics = [json.loads(line) for line in (rnn / "metrics.jsonl").read_text().splitlines() if line.strip()]
    valid = [m for m in metrics if m.get("type") == "valid"]
    scored = json.loads(charlm("perplexity", str(rnn), str(test), "--interpolate", str(kn), "--json"))
    return {
        "date": datetime.date.today().isoformat(),
        "tree": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "cpu": cpu_name(),
        "level": level,
        "text": name,
        "budget": budget,
        "forced": " ".join(forced),
        "train_tokens": next((m.get("train_tokens") for m in metrics if m.get("train_tokens")), None),
        "chosen": chosen.group(1).strip() if chosen else "",
        "steps": max((m.get("step", 0) for m in metrics), default=0),
        "valid_curve": [(m["step"], round(m["valid_loss"], 4)) for m in valid],
        "wall_s": round(wall, 1),
        "test": scored,
    }


def figures(rec: dict) -> tuple[float, float, float]:
    """Test perplexity (per token) of the RNN, the KN model and their mixture, from one record."""
    f = rec["test"]["files"][0]
    return tuple(math.exp(f[k]["nll"] / f[k]["tokens"]) for k in ("checkpoint", "interpolate", "mixture"))  # type: ignore[return-value]


def table(path: Path) -> str:
    """The records of results_matrix.jsonl as a Markdown table."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [
        "| level | text | budget | chosen | steps | RNN | KN | mixture | RNN vs KN | mixture vs best |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['level']} | {r['text']} | {r['budget']} | error: {r['error'][-80:]} |||||||")
            continue
        rnn, kn, mix = figures(r)
        short = r["chosen"].split(":")[0] + "; " + ("bf16" if "bf16 (" in r["chosen"] else "fp32")
        if r.get("forced"):
            short = f"{r['forced']} (forced); " + short.split("; ")[-1]
        out.append(
            f"| {r['level']} | {r['text']} | {r['budget']} | {short} | {r['steps']:,} | {rnn:.2f} | {kn:.2f} | "
            f"{mix:.2f} | {100 * (rnn / kn - 1):+.1f}% | {100 * (mix / min(rnn, kn) - 1):+.1f}% |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="10m,3m")
    ap.add_argument("--only", default="")
    ap.add_argument("--char", action="store_true")
    ap.add_argument("--word", action="store_true", default=None)
    ap.add_argument("--table", action="store_true", help="print results_matrix.jsonl as a table and stop")
    ap.add_argument("--force", default="", help="options forced on the RNN, e.g. '--hidden 768' (a faster machine's)")
    args = ap.parse_args()
    if args.table:
        print(table(HERE / "results_matrix.jsonl"))
        return
    only = set(filter(None, args.only.split(",")))
    plan = [] if args.char and not args.word else [("word", n, *v, 5) for n, v in WORD.items()]
    if args.char:
        plan += [("char", n, *v, 7) for n, v in CHAR.items()]
    for budget in args.budgets.split(","):
        for level, name, make, extra, order in plan:
            if only and name not in only:
                continue
            try:
                rec = run_one(level, name, make(), extra, budget, order, args.force.split())
            except RuntimeError as exc:
                rec = {"level": level, "text": name, "budget": budget, "error": str(exc)[-500:]}
            print(json.dumps(rec)[:600], flush=True)
            with open(HERE / "results_matrix.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
