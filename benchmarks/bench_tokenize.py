"""How fast each tokenizer turns a large corpus into ids, and how much memory that takes.

Builds a ~100 MB text by repeating corpora/war_and_peace.txt (read with
read_corpus), fits each kind on the original text (subword: on its first
--subword-fit-mb MB, 1000 pieces), times `encode_array` on the large text and
samples the process's resident memory while it runs. Each kind runs in its own
child process so that one kind's freed memory cannot hide the next one's peak.

    python benchmarks/bench_tokenize.py                 # writes benchmarks/results_tokenize.md
    python benchmarks/bench_tokenize.py --size-mb 10    # a quicker look
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from charlm.corpus import read_corpus  # noqa: E402
from charlm.tokenizers import fit_tokenizer  # noqa: E402

CORPUS = ROOT / "corpora" / "war_and_peace.txt"
RESULTS = Path(__file__).resolve().parent / "results_tokenize.md"
KINDS = {
    "char": {},
    "word (whitespace)": {"pretokenize": "whitespace"},
    "word (punct)": {"pretokenize": "punct"},
    "subword (unigram)": {"vocab_size": 1000, "model_type": "unigram"},
    "subword (bpe)": {"vocab_size": 1000, "model_type": "bpe"},
}
MB = 1e6


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples resident memory every few milliseconds on a thread; `peak` is the largest seen."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def worker(label: str, size_mb: float, subword_fit_mb: float) -> dict:
    """Fit one kind, encode the large text once, report time and memory (runs in a child)."""
    original = read_corpus(CORPUS)
    kind = label.split()[0]
    fit_text = original[: int(subword_fit_mb * MB)] if kind == "subword" else original
    t0 = time.perf_counter()
    tok = fit_tokenizer(kind, fit_text, **KINDS[label])
    fit_s = time.perf_counter() - t0

    reps = max(1, round(size_mb * MB / len(original.encode("utf-8"))))
    big = "".join([original] * reps)
    n_bytes = len(big.encode("utf-8"))
    before = rss_bytes()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        ids = tok.encode_array(big)
        encode_s = time.perf_counter() - t0
    check = tok.encode_array(original[:100_000]).tolist() == tok.encode(original[:100_000])
    return {
        "label": label,
        "fit_chars": len(fit_text),
        "fit_s": fit_s,
        "vocab_size": tok.vocab_size,
        "dtype": str(ids.dtype),
        "text_mb": n_bytes / MB,
        "text_rss_mb": before / MB,
        "tokens": int(ids.size),
        "ids_mb": ids.nbytes / MB,
        "encode_s": encode_s,
        "mb_per_s": n_bytes / MB / encode_s,
        "peak_extra_mb": (mem.peak - before) / MB,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "equals_encode": check,
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores available, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def versions() -> str:
    names = ("numpy", "sentencepiece", "torch")
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names) + f", Python {platform.python_version()}"


def report(rows: list[dict], size_mb: float, subword_fit_mb: float) -> str:
    lines = [
        "# Tokenizer throughput: `encode_array` on a large corpus",
        "",
        f"- date: {dt.date.today().isoformat()}",
        f"- machine: {machine()}",
        f"- versions: {versions()}",
        f"- text: corpora/war_and_peace.txt repeated to ~{size_mb:.0f} MB (UTF-8 bytes; read with `read_corpus`)",
        f"- fitted on: the original text (3.2 MB); subword on its first {subword_fit_mb:g} MB, 1000 pieces",
        "- MB/s: UTF-8 megabytes (10^6 bytes) of text encoded per second of `encode_array`",
        "- peak extra memory: the largest resident memory sampled (every 2 ms) during `encode_array`, minus the",
        "  resident memory just before it (which holds the text); it includes the returned ids",
        "- each kind ran once, in its own process; the machine is shared, so expect some noise",
        "",
        "| kind | fit | vocab | dtype | text MB | tokens | encode s | MB/s | peak extra MB | x text | = encode |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['fit_s']:.1f} s on {r['fit_chars'] / 1e6:.1f}M chars | {r['vocab_size']} | {r['dtype']} "
            f"| {r['text_mb']:.0f} | {r['tokens'] / 1e6:.1f}M | {r['encode_s']:.1f} | {r['mb_per_s']:.1f} "
            f"| {r['peak_extra_mb']:.0f} | {r['peak_extra_mb'] / r['text_mb']:.2f} | {'yes' if r['equals_encode'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=100.0, help="size of the repeated text")
    parser.add_argument("--subword-fit-mb", type=float, default=2.0, help="how much text the subword models train on")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated labels to run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.size_mb, args.subword_fit_mb)))
        return
    rows = []
    for label in args.kinds.split(","):
        cmd = [sys.executable, __file__, "--worker", label, "--size-mb", str(args.size_mb), "--subword-fit-mb", str(args.subword_fit_mb)]
        row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(f"{label:18} {row['mb_per_s']:7.1f} MB/s  {row['encode_s']:6.1f} s  peak extra {row['peak_extra_mb']:6.0f} MB", flush=True)
        rows.append(row)
    args.out.write_text(report(rows, args.size_mb, args.subword_fit_mb))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
