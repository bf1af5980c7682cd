"""The search behind the default char model (issue 3), run by hand.

    python benchmarks/search_defaults.py --budget 10m [--only NAME ...]

Each candidate is a full `charlm.train.train` run on corpora/tinyshakespeare.txt
(90/10 split, the defaults of TrainConfig plus the candidate's overrides) under
the same wall-clock budget, which covers validation time too. The lowest
validation loss reached within the budget decides. Results are appended to
benchmarks/results_search.jsonl and summarised in benchmarks/results_search.md.
Run nothing else on the machine meanwhile: the budget is wall-clock.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import tempfile
from pathlib import Path

import torch

from charlm.cli.common import parse_duration
from charlm.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

# name -> overrides of TrainConfig's defaults
CANDIDATES: dict[str, dict] = {
    "2x512": {"num_layers": 2, "hidden_size": 512, "dropout": 0.0},
    "2x512-d0.1": {"num_layers": 2, "hidden_size": 512, "dropout": 0.1},
    "2x512-lr3e-3-d0.1": {"num_layers": 2, "hidden_size": 512, "dropout": 0.1, "lr": 3e-3},
    "2x384-d0.1": {"num_layers": 2, "hidden_size": 384, "dropout": 0.1},
    "3x384-d0.1": {"num_layers": 3, "hidden_size": 384, "dropout": 0.1},
    "2x512-b64-lr3e-3": {"num_layers": 2, "hidden_size": 512, "batch_size": 64, "lr": 3e-3, "dropout": 0.1},
}


def run(name: str, overrides: dict, budget: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(corpus=(str(ROOT / "corpora" / "tinyshakespeare.txt"),), out=tmp, time_budget=budget, **overrides)
        res = train(cfg)
    valids = [(r["elapsed"], r["valid_loss"]) for r in res.history if r["type"] == "valid"]
    return {
        "name": name,
        "overrides": overrides,
        "budget_s": budget,
        "best_valid_loss": res.best_valid_loss,
        "best_valid_bpc": res.best_valid_loss / math.log(2),
        "final_valid_loss": res.last_valid_loss,
        "steps": res.step,
        "tokens_per_s": res.tokens_per_s,
        "valid_curve": valids,
        "date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def write_summary(jsonl: Path, md: Path) -> None:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (r["budget_s"], r["best_valid_loss"]))
    lines = [
        "# Default char model search (benchmarks/search_defaults.py)",
        "",
        "tinyshakespeare.txt, last 10% held out; each row one full `train()` under a wall-clock budget",
        "that includes validation; AdamW, cosine decay to 5% over the budget, warm-up 100, clip 5,",
        "emb 64, batch 32 x bptt 100 unless the overrides say otherwise.",
        "",
        "| budget | candidate | overrides | best valid loss (nats/char) | bpc | steps | tokens/s | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['budget_s'] / 60:g} min | {r['name']} | `{json.dumps(r['overrides'])}` | {r['best_valid_loss']:.4f} | "
            f"{r['best_valid_bpc']:.3f} | {r['steps']} | {r['tokens_per_s']:,.0f} | {r['date']} |"
        )
    md.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    budget = parse_duration(args.budget)
    jsonl = ROOT / "benchmarks" / "results_search.jsonl"
    for name, overrides in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        r = run(name, overrides, budget)
        print(f"{name}: best valid {r['best_valid_loss']:.4f} nats/char ({r['best_valid_bpc']:.3f} bpc), {r['steps']} steps, {r['tokens_per_s']:,.0f} tok/s", flush=True)
        with jsonl.open("a") as f:
            f.write(json.dumps(r) + "\n")
        write_summary(jsonl, ROOT / "benchmarks" / "results_search.md")


if __name__ == "__main__":
    main()
