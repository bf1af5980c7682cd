"""Corpora bigger than memory, end to end through the real CLI (issue 11's targets).

For a ~1 GB char corpus (every bundled text repeated) and a ~1 GB word corpus
(WikiText-2 repeated, whitespace-tokenized), each in a fresh token cache:

  first   `charlm train BIG --max-steps 50` (defaults otherwise): wall time and the
          child's peak resident memory (ru_maxrss), tokenization included;
  rerun   `charlm train BIG --max-steps 1 --overwrite --eval-tokens 4096 --no-samples
          --log-interval 1` (cache reused): seconds from launch to the first training
          step's log line, and to the end of the run;
  perplexity  `charlm perplexity CKPT BIG` on the whole 1 GB file, sampled for
          `--ppl-seconds` and then stopped: resident memory at every sample and how
          far into the file it got (a full pass of 1e9 tokens would take hours on 2
          cores), to show that memory stays flat however much has been read.

Corpora are written under benchmarks/out/ (kept between runs). Results go to
benchmarks/results_bigdata.md.

    python benchmarks/bench_bigdata.py               # ~10 minutes
    python benchmarks/bench_bigdata.py --size-mb 50  # smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "bigdata"
CORPORA = ROOT / "corpora"
TEXTS = {
    "char": ["tinyshakespeare.txt", "war_and_peace.txt", "wikitext-2.valid.txt", "wikitext-2.test.txt"],
    "word": ["wikitext-2.valid.txt", "wikitext-2.test.txt"],
}
TARGET_MB = {"char": 1500, "word": 2000}


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")


def make_corpus(level: str, size_mb: float) -> Path:
    path = OUT / f"{level}-{size_mb:g}mb.txt"
    unit = b"".join((CORPORA / n).read_bytes() for n in TEXTS[level])
    reps = max(1, round(size_mb * 1e6 / len(unit)))
    if not path.exists() or path.stat().st_size != reps * len(unit):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            for _ in range(reps):
                f.write(unit)
    return path


def timed(*args: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of `python -m charlm ARGS` in a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "charlm", *args], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"charlm {' '.join(args)} failed: {p.stderr.read()[-1500:] if p.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def first_step(*args: str, env: dict[str, str]) -> tuple[float, float, float]:
    """(seconds from launch to the first training step's log line, to exit, peak RSS MB) of a train run
    logging every step in plain lines (stderr is a pipe, so charlm prints plain log lines there)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "charlm", "train", *args, "--log-interval", "1"], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = float("nan")
    assert p.stderr is not None
    for line in p.stderr:
        if line.startswith("step 1 ") and first != first:
            first = time.perf_counter() - t0
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"charlm train {' '.join(args)} failed")
    return first, time.perf_counter() - t0, usage.ru_maxrss / 1024


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def read_bytes(pid: int) -> int:
    """Bytes the process has read from files so far (/proc/PID/io rchar)."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


def perplexity_memory(ckpt: Path, corpus: Path, seconds: float, env: dict[str, str]) -> list[tuple[float, float, int]]:
    """(seconds, RSS MB, bytes read) every few seconds of `charlm perplexity` on the whole file, then stop it."""
    p = subprocess.Popen([sys.executable, "-m", "charlm", "perplexity", str(ckpt), str(corpus), "--json"],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    samples, t0 = [], time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds and p.poll() is None:
            time.sleep(5)
            samples.append((time.perf_counter() - t0, rss_mb(p.pid), read_bytes(p.pid)))
    finally:
        p.kill()
        p.wait()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=1000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--ppl-seconds", type=float, default=90)
    ap.add_argument("--rerun-only", action="store_true", help="keep the cache and the run an earlier call left")
    a = ap.parse_args()
    rows, ppl = [], {}
    for level in ("char", "word"):
        corpus = make_corpus(level, a.size_mb)
        cache, out = OUT / f"cache-{level}", OUT / f"run-{level}"
        env = os.environ | {"CHARLM_CACHE_DIR": str(cache)}
        common = [str(corpus), "--level", level, "--out", str(out), "--overwrite", "--quiet"]
        if level == "word":
            common += ["--pretokenize", "whitespace"]
        if a.rerun_only and (cache.exists() and out.exists()):
            first = (float("nan"), float("nan"))
        else:
            shutil.rmtree(cache, ignore_errors=True)
            first = timed("train", *common, "--max-steps", str(a.steps), env=env)
        rerun = first_step(*[a for a in common if a != "--quiet"], "--max-steps", "1", "--eval-tokens", "4096",
                           "--no-samples", env=env)  # fmt: skip
        rows.append((level, corpus, first, rerun))
        print(level, first, rerun, flush=True)
        if level == "char":
            ppl = {"samples": perplexity_memory(out, corpus, a.ppl_seconds, env), "size": corpus.stat().st_size}
    lines = [
        "# Corpora bigger than memory, end to end (benchmarks/bench_bigdata.py)",
        "",
        f"- date: {datetime.now():%Y-%m-%d %H:%M}; CPU: {cpu_name()}, {os.cpu_count()} cores; machine RAM "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        f"- `charlm train BIG --max-steps {a.steps}` with defaults (the width for a step-limited run follows the "
        "corpus size), a fresh token cache; then a rerun with `--max-steps 1 --overwrite --eval-tokens 4096 "
        "--no-samples` (cache reused)",
        "- first run: wall seconds from launch to exit; rerun: to its first training step's log line, and to "
        "exit. Peak: the child's ru_maxrss.",
        "",
        "| corpus | MB | first run s | first peak MB | target MB | rerun: first step s (<10) | rerun: exit s | "
        "rerun peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level, corpus, (w1, m1), (f2, w2, m2) in rows:
        size = corpus.stat().st_size / 1e6
        lines.append(f"| {corpus.name} | {size:,.0f} | {w1:.1f} | {m1:,.0f} | < {TARGET_MB[level]:,} | {f2:.1f} | "
                     f"{w2:.1f} | {m2:,.0f} |")  # fmt: skip
    if ppl:
        lines += ["", f"## `charlm perplexity` on the whole {ppl['size'] / 1e6:,.0f} MB char file (stopped after "
                  f"{a.ppl_seconds:g} s)", "", "| seconds | RSS MB | MB read |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {t:.0f} | {m:,.0f} | {b / 1e6:,.1f} |" for t, m, b in ppl["samples"]]
    (HERE / "results_bigdata.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
