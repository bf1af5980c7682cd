"""The search behind the default char model (issue 3), run by hand.

    python benchmarks/search_defaults.py --budget 10m [--only NAME ...]            # wall-clock mode
    python benchmarks/search_defaults.py --budget 10m --steps-mode [--threads 1] [--only NAME]

Each candidate is a full `charlm.training.train` run on corpora/tinyshakespeare.txt
(90/10 split, the defaults of TrainConfig plus the candidate's overrides). The
lowest validation loss reached within the budget decides. Results are appended
to benchmarks/results_search.jsonl and summarised in benchmarks/results_search.md.

Wall-clock mode gives each run the budget as `time_budget` (validation time
included): run nothing else on the machine meanwhile. Steps mode is for a
shared machine: it first measures each candidate's training tokens/s with 2
threads (best of 3 bursts, which filters out other load), turns the budget into
`max_steps` = budget x tokens/s / (batch x bptt) (the cosine decay then runs
over those steps), and trains by steps, so other load slows the run but does
not change its losses; candidates can then run side by side with 1 thread each.
The winner is confirmed by a real wall-clock run of `charlm train`.
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
from charlm.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

# name -> overrides of TrainConfig's defaults
CANDIDATES: dict[str, dict] = {
    "2x512": {"num_layers": 2, "hidden_size": 512, "dropout": 0.0},
    "2x512-d0.1-lr3e-3": {"num_layers": 2, "hidden_size": 512, "dropout": 0.1, "lr": 3e-3},
    "2x384-d0.1-lr3e-3": {"num_layers": 2, "hidden_size": 384, "dropout": 0.1, "lr": 3e-3},
    "2x512-b64-d0.1-lr3e-3": {"num_layers": 2, "hidden_size": 512, "batch_size": 64, "lr": 3e-3, "dropout": 0.1},
    "2x512-d0.2-lr3e-3": {"num_layers": 2, "hidden_size": 512, "dropout": 0.2, "lr": 3e-3},
}


def measure_tps(overrides: dict, bursts: int = 3, steps: int = 12) -> float:
    """Best-of-`bursts` training tokens/s for a candidate (2 threads, real training step)."""
    import time

    from charlm.data.batching import batchify, get_batch
    from charlm.models import RNNLanguageModel, detach_state
    from charlm.training import prepare_data
    from charlm.training.optim import make_optimizer

    cfg = TrainConfig.from_options(corpus=(str(ROOT / "corpora" / "tinyshakespeare.txt"),), **overrides)
    data = prepare_data(cfg)
    model = RNNLanguageModel(cfg.model_config(data.tokenizer.vocab_size)).train()
    opt = make_optimizer(cfg, model)
    src = batchify(data.train_ids, cfg.task.batch_size)
    V, hidden, best = model.config.vocab_size, None, 0.0
    for b in range(bursts + 1):
        t = time.perf_counter()
        for i in range(steps):
            x, y = get_batch(src, i * cfg.task.bptt, cfg.task.bptt)
            fwd = model(x, hidden)
            logits, hidden = fwd.logits, fwd.state
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip, foreach=True)
            opt.step()
            hidden = detach_state(hidden)
        if b > 0:  # the first burst warms up
            best = max(best, steps * cfg.task.batch_size * cfg.task.bptt / (time.perf_counter() - t))
    return best


def run(name: str, overrides: dict, budget: float, max_steps: int | None = None, tps: float | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        limit = {"max_steps": max_steps} if max_steps else {"time_budget": budget}
        cfg = TrainConfig.from_options(
            corpus=(str(ROOT / "corpora" / "tinyshakespeare.txt"),), out=tmp, **limit, **overrides
        )
        res = train(cfg)
    valids = [(r["elapsed"], r["valid_loss"]) for r in res.history if r["type"] == "valid"]
    return {
        "name": name,
        "overrides": overrides,
        "budget_s": budget,
        "mode": "steps" if max_steps else "wall-clock",
        "measured_tps": tps,
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
        "Mode `steps`: the budget turned into steps at the quiet-machine tokens/s measured first (see the",
        "module docstring); `wall-clock`: a real time budget. tokens/s is the one used for the steps,",
        "or the run's own in wall-clock mode.",
        "",
        "| budget | mode | candidate | overrides | best valid loss (nats/char) | bpc | steps | tokens/s | date |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tps = r.get("measured_tps") or r["tokens_per_s"]
        lines.append(
            f"| {r['budget_s'] / 60:g} min | {r.get('mode', 'wall-clock')} "
            f"| {r['name']} | `{json.dumps(r['overrides'])}` | "
            f"{r['best_valid_loss']:.4f} | {r['best_valid_bpc']:.3f} | {r['steps']} | {tps:,.0f} | {r['date']} |"
        )
    md.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--steps-mode", action="store_true", help="budget -> steps at measured quiet tokens/s")
    ap.add_argument("--tps", type=float, default=None, help="steps mode: use this tokens/s instead of measuring")
    ap.add_argument("--measure-only", action="store_true", help="print each candidate's tokens/s and exit")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the training runs")
    args = ap.parse_args()
    budget = parse_duration(args.budget)
    jsonl = ROOT / "benchmarks" / "results_search.jsonl"
    chosen = {n: o for n, o in CANDIDATES.items() if not args.only or n in args.only}
    tps: dict[str, float | None] = {n: None for n in chosen}
    if args.steps_mode or args.measure_only:
        for name, overrides in chosen.items():
            tps[name] = args.tps or measure_tps(overrides)
            print(f"{name}: {tps[name]:,.0f} tokens/s (best of 3 bursts)", flush=True)
        if args.measure_only:
            return
    if args.threads:
        torch.set_num_threads(args.threads)
    for name, overrides in chosen.items():
        steps = None
        if args.steps_mode:
            cfg = TrainConfig.from_options(corpus=("x",), **overrides)
            steps = int(budget * tps[name] / (cfg.task.batch_size * cfg.task.bptt))
        r = run(name, overrides, budget, steps, tps[name])
        print(
            f"{name}: best valid {r['best_valid_loss']:.4f} nats/char ({r['best_valid_bpc']:.3f} "
            f"bpc), {r['steps']} steps, {r['tokens_per_s']:,.0f} tok/s",
            flush=True,
        )
        with jsonl.open("a") as f:
            f.write(json.dumps(r) + "\n")
        write_summary(jsonl, ROOT / "benchmarks" / "results_search.md")


if __name__ == "__main__":
    main()
