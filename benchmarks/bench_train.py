"""Training throughput and model FLOP utilisation (issue 3), run by hand.

    python benchmarks/bench_train.py [--steps 40] [--out benchmarks/results_train.md]

Measures, in one run:
- this machine's fp32 matrix-multiply peak (best of torch.mm, numpy and oneDNN
  linear on 2048x2048 products), the denominator of the utilisation;
- training tokens/s of the default char model at width 384 on tinyshakespeare
  (`charlm train corpora/tinyshakespeare.txt --hidden 384`: dropout, batch and
  rate as charlm.training.autosize chooses them here, measuring fp32; the width is fixed
  so that runs compare, as autosize's measured choice moves with the machine's
  load) and of a word-level 2x650 LSTM (tied, bptt 35, batch 20, dropout 0.5,
  full softmax) on wikitext-2.valid.txt;
- model FLOP utilisation = 3 x forward matmul FLOPs per token x tokens/s / peak
  (the 6N rule for recurrent nets: forward 2 FLOPs per weight, backward 4).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlm.data.batching import batchify, get_batch
from charlm.models import RNNLanguageModel, detach_state
from charlm.training import TrainConfig, autosize, prepare_data
from charlm.training.optim import make_optimizer
from charlm.training.speed import measure_speed

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(n: int = 2048, reps: int = 8) -> dict[str, float]:
    a, b = torch.randn(n, n), torch.randn(n, n)

    def gflops(f) -> float:
        f()
        t = time.perf_counter()
        for _ in range(reps):
            f()
        return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9

    out = {"torch.mm": gflops(lambda: torch.mm(a, b))}
    an, bn = a.numpy(), b.numpy()
    out["numpy"] = gflops(lambda: an @ bn)
    try:
        from torch.utils import mkldnn as mkldnn_utils

        lin = torch.nn.Linear(n, n, bias=False)
        ml, am = mkldnn_utils.to_mkldnn(lin), a.to_mkldnn()
        with torch.no_grad():
            out["oneDNN linear"] = gflops(lambda: ml(am))
    except (RuntimeError, AttributeError):
        pass
    return out


def train_throughput(config: TrainConfig, steps: int) -> tuple[TrainConfig, dict[str, float]]:
    """Tokens/s of the real training step (forward, backward, clip, AdamW) after 5 warm-up steps, and the
    config timed: the options left open are chosen first, as `charlm train` chooses them here (in fp32)."""
    torch.manual_seed(0)
    data = prepare_data(config)
    vocab, cpu = data.tokenizer.vocab_size, torch.device("cpu")
    choice = autosize.resolve(config, len(data.train_ids), cpu.type, lambda c: measure_speed(c, vocab, cpu))
    config = choice.config
    if choice.reason:
        print(f"chosen: {choice.reason}")
    assert config.task.batch_size is not None and config.task.bptt is not None
    model = RNNLanguageModel(config.model_config(data.tokenizer.vocab_size))
    opt = make_optimizer(config, model)
    src = batchify(data.train_ids, config.task.batch_size)
    V = model.config.vocab_size
    hidden = None

    def step(i: int) -> None:
        nonlocal hidden
        x, y = get_batch(src, (i * config.task.bptt) % (src.shape[1] - config.task.bptt - 1), config.task.bptt)
        fwd = model(x, hidden)
        logits, hidden = fwd.logits, fwd.state
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip, foreach=True)
        opt.step()
        hidden = detach_state(hidden)

    for i in range(5):
        step(i)
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    dt = time.perf_counter() - t
    tps = steps * config.task.batch_size * config.task.bptt / dt
    return config, {
        "tokens_per_s": tps,
        "flops_per_token": 3 * model.flops_per_token(),
        "vocab": V,
        "params": model.num_parameters(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_train.md"))
    args = ap.parse_args()

    peaks = matmul_peak()
    peak = max(peaks.values())
    char_cfg = TrainConfig.from_options(corpus=(str(ROOT / "corpora" / "tinyshakespeare.txt"),), hidden_size=384)
    word_cfg = char_cfg.replace(
        corpus=(str(ROOT / "corpora" / "wikitext-2.valid.txt"),),
        level="word",
        num_layers=2,
        hidden_size=650,
        emb_size=650,
        tie_weights=True,
        bptt=35,
        batch_size=20,
        lr=1e-3,
        dropout=0.5,
        dropout_input=0.0,
        dropout_embed=0.0,
        weight_drop=0.0,
        adaptive_softmax=False,
    )
    rows = []
    for name, cfg, steps in (
        ("char, defaults at width 384", char_cfg, args.steps),
        ("word 2x650 tied (wikitext-2 valid)", word_cfg, max(10, args.steps // 2)),
    ):
        cfg, r = train_throughput(cfg, steps)
        achieved = r["tokens_per_s"] * r["flops_per_token"] / 1e9
        rows.append((name, cfg, r, achieved))
        print(
            f"{name}: {r['tokens_per_s']:,.0f} tokens/s, {achieved:.1f} "
            f"GFLOP/s, {100 * achieved / peak:.1f}% of {peak:.0f}"
        )

    lines = [
        "# Training throughput (benchmarks/bench_train.py)",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, numpy {np.__version__}.",
        "",
        "fp32 matmul peak (2048^3): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
        + f"; peak used: {peak:.0f}.",
        "",
        "| model | shape | batch x bptt | vocab | params | tokens/s | model GFLOP/s | utilisation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, cfg, r, achieved in rows:
        shape = f"{cfg.model.num_layers}x{cfg.model.hidden_size} {cfg.model.cell}, emb {cfg.model.emb_size}"
        lines.append(
            f"| {name} | {shape} | {cfg.task.batch_size}x{cfg.task.bptt} | {r['vocab']:,} | {r['params'] / 1e6:.2f}M | "
            f"{r['tokens_per_s']:,.0f} | {achieved:.1f} | {100 * achieved / peak:.1f}% |"
        )
    lines += [
        "",
        "FLOPs per token = 3 x 2 x (recurrent + input + decoder weights), the 6N rule; elementwise work not counted.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
