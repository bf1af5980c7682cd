"""Sequence labelling (issue 25), run by hand, one experiment per call, each under the machine's lock:

    flock -x /work/bench.lock python benchmarks/bench_tagging.py EXPERIMENT [--budget 10m] [--lms FWD BWD] [--name RUN]

Experiments (dev splits only: the test splits are held out; every run takes charlm's defaults, only the
budget, the validation file and the LMs are given):

    ewt          UD English EWT universal POS: train on en_ewt-ud-train.conllu, validate on
                 en_ewt-ud-dev.conllu; the best checkpoint's dev accuracy (`charlm evaluate`)
    wnut         WNUT-17 entities: train on wnut17train.conll, validate on emerging.dev.conll; dev
                 entity P/R/F1 of the best checkpoint; with --crf both or one of crf/softmax
    speed        `charlm tag` of the EWT dev file (raw words, 25k) with a tagger checkpoint (--tagger):
                 words per second; yardstick: `charlm perplexity` tokens/s of the forward LM on the
                 same dev text in the same session, and the CPU

The character LMs are charlm's own: `charlm train ewt-train.txt --valid ewt-dev.txt [--reverse] --time-budget 5m`
on the sentences ("# text =" lines) of the EWT train file. Each result is appended as one JSON line to
benchmarks/results_tagging.jsonl; benchmarks/results_tagging.md reports them.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"
EWT = CORPORA / "ud-english-ewt"
WNUT = CORPORA / "wnut17"
OUT = Path("/tmp/bench")
RESULTS = ROOT / "benchmarks" / "results_tagging.jsonl"


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def charlm(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "charlm", *args]
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


def record(row: dict) -> None:
    row = {"cpu": cpu_name(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **row}
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


def train_and_evaluate(name: str, train: Path, dev: Path, budget: str, extra: list[str]) -> dict:
    out = OUT / name
    t0 = time.perf_counter()
    r = charlm("train", str(train), "--model", "tag", "--valid", str(dev), "--time-budget", budget, "--out", str(out),
               "--overwrite", *extra)  # fmt: skip
    seconds = time.perf_counter() - t0
    summary = [
        line for line in (r.stdout + r.stderr).splitlines() if "chosen for this run" in line or "tagger:" in line
    ]
    figures = json.loads(charlm("evaluate", str(out), str(dev), "--json").stdout)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [m for m in metrics if m.get("type") == "valid"]
    return {
        "run": name, "budget": budget, "options": extra, "wall_s": round(seconds, 1), "steps": valid[-1]["step"],
        "epochs": valid[-1]["epoch"], "best_step": min(valid, key=lambda m: m["valid_loss"])["step"],
        "dev_accuracy": figures["accuracy"], "dev_entities": figures["entities"], "start": summary,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("experiment", choices=["ewt", "wnut", "speed"])
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--lms", nargs=2, metavar=("FWD", "BWD"), help="forward and backward char-LM checkpoints")
    ap.add_argument("--crf", choices=["both", "crf", "softmax"], default="both")
    ap.add_argument("--tagger", help="speed: the tagger checkpoint to time")
    ap.add_argument("--name", help="ewt: run name = folder in /tmp/bench (default ewt, ewt-lm)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    lm_opts = [x for p in (a.lms or []) for x in ("--embeddings", p)]
    suffix = "-lm" if a.lms else ""
    if a.experiment == "ewt":
        row = train_and_evaluate(a.name or f"ewt{suffix}", EWT / "en_ewt-ud-train.conllu", EWT / "en_ewt-ud-dev.conllu",
                                 a.budget, lm_opts)  # fmt: skip
        record({"experiment": "ewt-upos", **row})
    elif a.experiment == "wnut":
        heads = {"both": ["crf", "softmax"], "crf": ["crf"], "softmax": ["softmax"]}[a.crf]
        for head in heads:
            opts = [*lm_opts, "--crf" if head == "crf" else "--no-crf"]
            row = train_and_evaluate(f"wnut-{head}{suffix}", WNUT / "wnut17train.conll", WNUT / "emerging.dev.conll",
                                     a.budget, opts)  # fmt: skip
            record({"experiment": "wnut17-entities", **row})
    else:
        dev = EWT / "en_ewt-ud-dev.conllu"
        words_file = OUT / "ewt-dev-words.txt"
        sentences = [
            " ".join(line.split("\t")[1] for line in block.splitlines() if line and line[0].isdigit()
                     and "\t" in line and not any(c in line.split("\t")[0] for c in "-."))
            for block in dev.read_text(encoding="utf-8").split("\n\n") if block.strip()
        ]  # fmt: skip
        words_file.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        n_words = sum(len(s.split()) for s in sentences)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            charlm("tag", a.tagger, str(words_file), "--pretokenized", "--device", "cpu", "-q")
            times.append(time.perf_counter() - t0)
        yard = {}
        if a.lms:
            text = OUT / "ewt-dev.txt"
            t0 = time.perf_counter()
            r = charlm("perplexity", a.lms[0], str(text), "--device", "cpu", "--json")
            ppl_s = time.perf_counter() - t0
            tokens = json.loads(r.stdout)["files"][0]["tokens"]
            yard = {"perplexity_wall_s": round(ppl_s, 2), "perplexity_tokens": tokens,
                    "perplexity_tokens_per_s": round(tokens / ppl_s),
                    "note_yardstick": "wall time of charlm perplexity FWD ewt-dev.txt"}  # fmt: skip
        best = min(times)
        record({
            "experiment": "tag-speed", "tagger": a.tagger, "words": n_words, "sentences": len(sentences),
            "wall_s_runs": [round(t, 2) for t in times], "words_per_s_wall": round(n_words / best),
            "note": "wall time of the whole command (start-up, loading, reading, LM embeddings, writing)", **yard,
        })  # fmt: skip


if __name__ == "__main__":
    main()
