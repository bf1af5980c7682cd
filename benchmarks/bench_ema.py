"""Does an exponential moving average of the weights beat the final weights of a budgeted run?

Issue 10 lists weight averaging (EMA / Polyak) as a lever to measure. This trains
one run with the library (`charlm.training.train`, the defaults the CLI would use for
the budget) while keeping EMA copies of the weights at several decays alongside
(wrapping the loop's `apply_gradients`, so the run itself is unchanged), then scores
the run's final weights and each average on the same validation ids with the same
function validation uses. The comparison is within one run, so machine speed does
not enter it. Results are appended to benchmarks/results_ema.md.

    python benchmarks/bench_ema.py --budget 180 --corpus corpora/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import charlm.training.loop as loop_mod  # noqa: E402
from charlm.checkpoint.store import load_for_inference  # noqa: E402
from charlm.data.tokenizers import line_start_id  # noqa: E402
from charlm.evaluation.scoring import evaluate_ids  # noqa: E402
from charlm.training import TrainConfig, prepare_data, train  # noqa: E402

DECAYS = (0.99, 0.995, 0.998, 0.999)


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="corpora/tinyshakespeare.txt")
    ap.add_argument("--budget", type=float, default=180)
    ap.add_argument("--steps", type=int, default=None, help="a step limit instead (load on the machine then cannot "
                    "change the run); the shape is then 2x256, batch 16, lr 5e-3, no dropout")  # fmt: skip
    a = ap.parse_args()
    out = HERE / "out" / "ema"
    limit = {"max_steps": a.steps, "hidden_size": 256, "batch_size": 16, "lr": 5e-3, "dropout": 0.0} if a.steps else {
        "time_budget": a.budget}  # fmt: skip
    config = TrainConfig.from_options(corpus=(str(ROOT / a.corpus),), out=str(out), **limit)  # type: ignore[arg-type]
    averages: dict[float, list[torch.Tensor]] = {}
    real_step = loop_mod.apply_gradients
    owner: list[object] = []

    def step_with_ema(optimizer, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_step(optimizer, *args, **kwargs)
        params = [p.detach() for g in optimizer.param_groups for p in g["params"]]
        if owner and owner[0] is not optimizer:  # autosize's speed measurement ran first: start again
            averages.clear()
        owner[:] = [optimizer]
        for d in DECAYS:
            if d not in averages:
                averages[d] = [p.clone() for p in params]
            else:
                torch._foreach_lerp_(averages[d], params, 1 - d)
        return result

    loop_mod.apply_gradients = step_with_ema
    result = train(config, overwrite=True)
    data = prepare_data(config)
    model, tok, _ = load_for_inference(out, "last")
    ctx = line_start_id(tok)
    n = len(data.valid_ids)

    def score() -> float:
        s = evaluate_ids(model, data.valid_ids, ctx, chars=data.valid_chars, nbytes=data.valid_bytes, oov=0)
        return s.nll / s.tokens

    rows = [("final weights", score())]
    trainable = [p for p in model.parameters() if p.requires_grad]
    for d, avg in averages.items():
        with torch.no_grad():
            backup = [p.clone() for p in trainable]
            for p, q in zip(trainable, avg, strict=True):
                p.copy_(q)
            rows.append((f"EMA {d}", score()))
            for p, q in zip(trainable, backup, strict=True):
                p.copy_(q)
    lines = [
        f"## {datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}: {Path(a.corpus).name}, "
        + (f"{a.steps} steps of 2x256, batch 16, lr 5e-3, no dropout" if a.steps else f"{a.budget:g} s, defaults")
        + f" ({result.step} steps, {n:,} validation tokens)",
        "",
        "| weights | validation nats/token | minus final |",
        "|---|---|---|",
        *(f"| {name} | {loss:.4f} | {loss - rows[0][1]:+.4f} |" for name, loss in rows),
        "",
    ]
    path = HERE / "results_ema.md"
    head = "" if path.exists() else "# Weight averaging (benchmarks/bench_ema.py)\n\n"
    with path.open("a") as f:
        f.write(head + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
