"""Quality per minute: charlm's defaults against the plain reference, same machine, same hour.

For each corpus and budget, runs the real CLI (`charlm train CORPUS --time-budget B`,
defaults only unless --args adds options) and the reference trainer
(`../shared/bench/charlstm_ref.py`, 2x512 LSTM, dropout 0.2, Adam 2e-3, 32 x 100,
its budget counting training time only) and records:
  - charlm's own validation figure (what a user sees), its steps and tokens/s;
  - the reference's validation loss at the same number of seconds;
  - both final models scored the same way on the same text: the reference's
    validation split (the last 10% of characters), one stream each from the zero
    state (`charlm perplexity --exact`-style), so the split and protocol differ in
    nothing but the model.
The ratio charlm / reference (per character: charlm's model scored on the reference's split,
so word and subword runs compare too) is the figure that travels between machines.
Figures are appended to benchmarks/results_quality.jsonl and summarised in
benchmarks/results_quality.md. Nothing else heavy may run meanwhile.

    python benchmarks/bench_quality.py --corpus corpora/tinyshakespeare.txt --budgets 60,180,600
    python benchmarks/bench_quality.py --budgets 60 --only charlm --args "--hidden 256" --tag h256
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "quality"
REF = ROOT.parent / "shared" / "bench" / "charlstm_ref.py"
RESULTS = HERE / "results_quality.jsonl"


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")


def ref_split(corpus: Path) -> tuple[str, str]:
    """The reference's 90/10 split by characters (nanoGPT's): (training text, validation text)."""
    text = corpus.read_text(encoding="utf-8")
    n = int(len(text) * 0.9)
    return text[:n], text[n:]


@torch.no_grad()
def exact_nll(logits_of, ids: list[int], context: int) -> float:
    """Summed NLL of ids read as one stream after `context`, from the zero state (the same for both models)."""
    x = torch.tensor([[context, *ids[:-1]]])
    y = torch.tensor(ids)
    total, state = 0.0, None
    for i in range(0, x.size(1), 2048):
        logits, state = logits_of(x[:, i : i + 2048], state)
        total += F.cross_entropy(logits[0].double(), y[i : i + 2048], reduction="sum").item()
    return total


def charlm_on_ref_split(run: Path, corpus: Path) -> float:
    sys.path.insert(0, str(ROOT))
    from charlm.checkpoint.store import load_for_inference

    model, tok, _ = load_for_inference(run, "best")
    _, valid = ref_split(corpus)
    ids = tok.encode(valid)
    context = tok.eos_id if tok.kind == "word" else tok.encode("\n")[0]
    return exact_nll(lambda x, s: tuple(model(x, s))[::2], ids, context) / len(valid)  # nats per character, any level


def ref_on_ref_split(ckpt: Path, corpus: Path) -> float:
    import importlib.util

    spec = importlib.util.spec_from_file_location("charlstm_ref", REF)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)  # type: ignore[union-attr]
    model, chars = ref.load_ckpt(str(ckpt))
    stoi = {c: i for i, c in enumerate(chars)}
    _, valid = ref_split(corpus)
    return exact_nll(
        lambda x, s: model(x, s if s is not None else model.init_state(1)), [stoi[c] for c in valid], stoi["\n"]
    ) / len(valid)


def run_charlm(corpus: Path, budget: int, args: str, tag: str, collect: bool = False) -> dict:
    """Train (or with `collect`, read the run an earlier call left) and describe it."""
    out = OUT / f"{corpus.stem}-{tag}-{budget}s"
    cmd = [sys.executable, "-m", "charlm", "train", str(corpus), "--time-budget", f"{budget}s", "--out", str(out),
           "--overwrite", "--quiet", "--cache-dir", str(OUT / "cache"), *shlex.split(args)]  # fmt: skip
    t0 = time.perf_counter()
    if not collect:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"charlm failed: {p.stderr[-2000:]}")
    wall = time.perf_counter() - t0 if not collect else None
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["type"] == "valid"]
    train = [r for r in records if r["type"] == "train"]
    model = json.loads((out / "checkpoint.json").read_text())["model"]
    return {
        "who": "charlm", "tag": tag, "args": args, "budget": budget, "wall": wall and round(wall, 1),
        "valid_loss": min(r["valid_loss"] for r in valid), "steps": valid[-1]["step"],
        "tokens_per_s": round(train[-1]["tokens_per_s"]) if train else None,
        "shape": f"{model['num_layers']}x{model['hidden_size']}", "elapsed": valid[-1]["elapsed"],
        "on_ref_split": round(charlm_on_ref_split(out, corpus), 4),
    }  # fmt: skip


def run_ref(corpus: Path, budgets: list[int]) -> list[dict]:
    ckpt = OUT / f"{corpus.stem}-ref.pt"
    cmd = [sys.executable, str(REF), "train", "--data", str(corpus), "--batch", "32", "--seq", "100",
           "--dropout", "0.2", "--budget", str(max(budgets)), "--eval-at", ",".join(map(str, budgets)),
           "--log-every", "100", "--out", str(ckpt)]  # fmt: skip
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"reference failed: {p.stderr[-2000:]}")
    (OUT / f"{corpus.stem}-ref.jsonl").write_text(p.stdout)  # kept: the run is 10 minutes of a quiet machine
    records = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    evals = [r for r in records if r.get("kind") == "eval"]
    final = ref_on_ref_split(ckpt, corpus)
    return [
        {"who": "reference", "budget": int(e["mark_s"]), "valid_loss": e["val_loss"], "steps": e["step"],
         "tokens_per_s": round(e["train_chars_per_s"]), "on_ref_split": round(final, 4) if e is evals[-1] else None}
        for e in evals
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="corpora/tinyshakespeare.txt")
    ap.add_argument("--budgets", default="60,180,600")
    ap.add_argument("--only", choices=["charlm", "reference"], default=None)
    ap.add_argument("--args", default="", help="extra `charlm train` options (defaults when empty)")
    ap.add_argument("--tag", default="defaults")
    ap.add_argument("--collect", action="store_true", help="record charlm runs already in benchmarks/out/quality")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    corpus = (ROOT / a.corpus).resolve()
    budgets = [int(b) for b in a.budgets.split(",")]
    stamp = {"date": f"{datetime.now():%Y-%m-%d %H:%M}", "cpu": cpu_name(), "corpus": corpus.name}
    rows = []
    if a.only != "reference":
        rows += [run_charlm(corpus, b, a.args, a.tag, a.collect) for b in budgets]
    if a.only != "charlm":
        rows += run_ref(corpus, budgets)
    with RESULTS.open("a") as f:
        for r in rows:
            f.write(json.dumps(stamp | r) + "\n")
            print(json.dumps(stamp | r), flush=True)
    write_summary()


def nearest_reference(rows: list[dict], r: dict) -> dict | None:
    """The reference row of the same corpus, budget and CPU run closest in time to r, within 3 hours."""

    def when(x: dict) -> float:
        return datetime.strptime(x["date"], "%Y-%m-%d %H:%M").timestamp()

    refs = [x for x in rows if x["who"] == "reference" and x["budget"] == r["budget"]
            and x["corpus"] == r["corpus"] and x["cpu"] == r["cpu"] and abs(when(x) - when(r)) <= 3 * 3600]  # fmt: skip
    return min(refs, key=lambda x: abs(when(x) - when(r)), default=None)


def write_summary() -> None:
    """results_quality.md: every sitting's rows, newest first, with the ratio to the reference of the same sitting."""
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    lines = ["# Quality per minute (benchmarks/bench_quality.py)", "",
             "Validation loss in nats/char. `own`: the figure each tool reports on its own split; `same split`: both",
             "final models scored alike on the reference's split (one stream from the zero state). ratio = charlm /",
             "reference at the same budget, same CPU, the reference run nearest in time (within 3 hours).", "",
             "| date | CPU | corpus | who | tag | budget | shape | steps | tok/s | own | same split | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in reversed(rows):
        ref = nearest_reference(rows, r)
        mine = r.get("on_ref_split") or r["valid_loss"]  # per character: word and subword runs too
        ratio = f"{mine / ref['valid_loss']:.3f}" if ref and r["who"] == "charlm" else ""
        same = "" if r.get("on_ref_split") is None else f"{r['on_ref_split']:.4f}"
        cells = [
            r["date"],
            r["cpu"],
            r["corpus"],
            r["who"],
            r.get("tag", ""),
            f"{r['budget']} s",
            r.get("shape", "2x512"),
            r["steps"],
            f"{r['tokens_per_s']:,}",
            f"{r['valid_loss']:.4f}",
            same,
            ratio,
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")  # fmt: skip
    (HERE / "results_quality.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
