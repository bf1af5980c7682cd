"""Speed of `charlm score` on 10,000 lines against `charlm perplexity` of the same text (issue 23), run by hand.

    python benchmarks/bench_score.py [--checkpoint DIR] [--lines 10000] [--train-steps 300] [--hidden 256]
        [--repeats 3] [--threads N] [--out benchmarks/results_score.md]

The lines are tinyshakespeare's non-empty lines, repeated to --lines. Without --checkpoint a small char
model (2 x --hidden LSTM) is first trained for --train-steps on tinyshakespeare in a temporary directory.
Both commands run in this process through click (each loads the checkpoint, as a user's call would) on the
CPU, after one untimed call of each on 300 lines, taking turns --repeats times, the fastest of each kept;
tokens per second = the tokens each scores / its wall time. `score` scores each line's tokens (its line
end is not scored); `perplexity` scores the file as one text (line ends included), in its default mode
(32 parallel streams) and with --exact. Target: score at least as fast per token as perplexity.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from click.testing import CliRunner

import charlm
from charlm.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHAKES = ROOT / "corpora" / "tinyshakespeare.txt"


def timed(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    seconds = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"charlm {' '.join(args)} failed: {result.output}")
    return seconds, result.stdout


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = Path(tmp) / "ckpt"
            charlm.train(SHAKES, out=ckpt, max_steps=args.train_steps, hidden_size=args.hidden, device="cpu")
        lines = [ln for ln in SHAKES.read_text(encoding="utf-8").splitlines() if ln]
        lines = (lines * (args.lines // len(lines) + 1))[: args.lines]
        path = Path(tmp) / "lines.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        lm = charlm.load(ckpt, device="cpu")
        small = Path(tmp) / "warm.txt"
        small.write_text("\n".join(lines[:300]) + "\n", encoding="utf-8")
        commands = {
            "charlm score --json": ("score", str(ckpt), "--json", "--device", "cpu"),
            "charlm perplexity": ("perplexity", str(ckpt), "--json", "--device", "cpu"),
            "charlm perplexity --exact": ("perplexity", str(ckpt), "--json", "--device", "cpu", "--exact"),
        }
        for command in commands.values():  # the process's first-call costs (threads, kernels) paid by none
            timed(*command, str(small))
        best: dict[str, tuple[int, float]] = {}
        for _ in range(args.repeats):  # the commands take turns; the fastest of each counts (a shared machine)
            for name, command in commands.items():
                sec, out = timed(*command, str(path))
                tokens = _tokens(out)
                best[name] = (tokens, min(sec, best.get(name, (0, sec))[1]))
    report(args, lm, [(name, tokens, sec) for name, (tokens, sec) in best.items()])


def _tokens(out: str) -> int:
    """Tokens scored: `perplexity --json`'s total, or the sum over `score --json`'s lines."""
    if out.startswith("{\n"):
        return int(json.loads(out)["total"]["tokens"])
    return sum(json.loads(r)["tokens"] for r in out.splitlines())


def report(args: argparse.Namespace, lm: charlm.LanguageModel, rows: list[tuple[str, int, float]]) -> None:
    rate = {name: tokens / sec for name, tokens, sec in rows}
    lines = [
        f"## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"model: {lm.model.describe()} {lm.model.config.summary()}, {lm.level} level, "
        f"vocabulary {lm.tokenizer.vocab_size}; "
        f"{args.lines:,} lines of tinyshakespeare",
        "",
        f"| command | tokens | seconds (load included; best of {args.repeats}) | tokens/s |",
        "|---|---:|---:|---:|",
        *(f"| `{name}` | {tokens:,} | {sec:.2f} | {tokens / sec:,.0f} |" for name, tokens, sec in rows),
        "",
        *(
            f"score / {name.removeprefix('charlm ')}: {rate['charlm score --json'] / r:.2f}x per token"
            for name, r in rate.items()
            if name.startswith("charlm perplexity")
        ),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main_bench()
