"""Kneser-Ney against a quickly trained RNN, their mixture, and dynamic evaluation, run by hand.

    python benchmarks/bench_dynamic.py [--budget 180] [--dynamic-tokens 20000] [--out benchmarks/results_dynamic.md]

For each of two setups:
- char: corpora/tinyshakespeare.txt, the run's own split (last 10% held out); the
  held-out text is that validation text (tinyshakespeare has no separate test);
- word: corpora/wikitext-2.valid.txt as training text (its last 10% the run's
  validation text), corpora/wikitext-2.test.txt held out;
it trains an RNN for --budget seconds (charlm's defaults, width chosen for the
budget) and KN models of a few orders (`train(TrainConfig.from_options(corpus, model="kn"))`), then
scores the held-out text exactly (one stream, `charlm perplexity`'s protocol):
each model alone; the mixture with the RNN whose weight is chosen on the RNN
run's validation text (`choose_weight`, as `perplexity --interpolate` does);
and, on the first --dynamic-tokens tokens, static vs dynamic evaluation over a
grid of step sizes and segment lengths. One intra-op thread: on a shared 2-core
machine two threads fight over the cores (measured: 100x slower).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's charlm, whatever is installed

from charlm.checkpoint.store import load_for_inference  # noqa: E402
from charlm.data.corpus import corpus_files, split_offset  # noqa: E402
from charlm.evaluation import choose_weight, context_id, evaluate_file, evaluate_file_mixture  # noqa: E402
from charlm.evaluation.dynamic import (  # noqa: E402
    RMS_DECAY,
    RMS_TOKENS,
    DynamicOptions,
    evaluate_text_dynamic,
    gradient_rms,
)
from charlm.models.rnn import RNNLanguageModel  # noqa: E402
from charlm.training import TrainConfig, prepare_data, train  # noqa: E402

CORPORA = ROOT / "corpora"
OUT = ROOT / "benchmarks" / "out"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def setups() -> list[dict]:
    ts = CORPORA / "tinyshakespeare.txt"
    return [
        {"name": "char", "corpus": ts, "level": "char", "orders": [5, 7, 9, 10], "held": None},
        {
            "name": "word",
            "corpus": CORPORA / "wikitext-2.valid.txt",
            "level": "word",
            "orders": [3, 5],
            "held": CORPORA / "wikitext-2.test.txt",
        },
    ]


def held_out(setup: dict) -> Path:
    """The text scored: the test file, or (char) the run's own validation text written to a file."""
    if setup["held"] is not None:
        return setup["held"]
    path = OUT / f"dyn-{setup['name']}-held.txt"
    corpus = setup["corpus"]
    path.write_bytes(corpus.read_bytes()[split_offset(corpus_files([corpus]), 0.1) :])
    return path


def prefix(path: Path, level: str, tokens: int, tok) -> str:
    """The start of a held-out text with about `tokens` tokens, cut at a line end."""
    text = path.read_text(encoding="utf-8")
    lines, n, out = text.split("\n"), 0, []
    for line in lines:
        out.append(line)
        n += len(tok.encode(line + "\n"))
        if n >= tokens:
            break
    return "\n".join(out) + "\n"


def run(setup: dict, budget: float, dyn_tokens: int, lrs: list[float], segments: list[int]) -> list[str]:
    name, level = setup["name"], setup["level"]
    rnn_dir = OUT / f"dyn-{name}-rnn"
    t0 = time.perf_counter()
    cfg = TrainConfig.from_options(corpus=(str(setup["corpus"]),), out=str(rnn_dir), level=level, time_budget=budget)
    result = train(cfg, overwrite=True)
    train_s = time.perf_counter() - t0
    rnn, tok, info = load_for_inference(rnn_dir)
    assert isinstance(rnn, RNNLanguageModel)
    held = held_out(setup)
    lines = [
        f"## {name} level: {setup['corpus'].name}, held out {held.name}",
        "",
        f"RNN: {rnn.config.num_layers} x {rnn.config.hidden_size} {rnn.config.cell.upper()} "
        f"({rnn.num_parameters() / 1e6:.2f}M parameters), trained {budget:.0f} s ({result.step} steps, "
        f"{train_s:.0f} s with validation), best validation loss {result.best_valid_loss:.4f}.",
        "",
        "| model | held-out tokens | loss (nats/token) | perplexity | bits/char | seconds to score |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    t = time.perf_counter()
    s = evaluate_file(rnn, tok, held, exact=True)
    lines.append(f"| RNN | {s.tokens:,} | {s.loss:.4f} | {s.perplexity:.2f} | {s.bits_per_char:.4f} | "
                 f"{time.perf_counter() - t:.1f} |")  # fmt: skip
    data = prepare_data(TrainConfig.from_dict(info.train_config), tok)
    best_order, best_loss, kns = None, float("inf"), {}
    for order in setup["orders"]:
        kn_dir = OUT / f"dyn-{name}-kn{order}"
        t = time.perf_counter()
        cfg = TrainConfig.from_options(
            corpus=(str(setup["corpus"]),), out=str(kn_dir), level=level, model="kn", order=order
        )
        train(cfg, overwrite=True)
        est = time.perf_counter() - t
        kn, kn_tok, _ = load_for_inference(kn_dir)
        assert kn_tok.to_dict() == tok.to_dict(), "same corpus and level: the same tokenizer"
        t = time.perf_counter()
        k = evaluate_file(kn, tok, held)
        lines.append(f"| KN {order}-gram (estimated and written in {est:.1f} s) | {k.tokens:,} | {k.loss:.4f} | "
                     f"{k.perplexity:.2f} | {k.bits_per_char:.4f} | {time.perf_counter() - t:.1f} |")  # fmt: skip
        kns[order] = kn
        if k.loss < best_loss:
            best_order, best_loss = order, k.loss
    for order, kn in kns.items():
        t = time.perf_counter()
        w, _ = choose_weight(rnn, kn, data.valid_ids, context_id(tok), max_tokens=262_144)
        _, _, mix = evaluate_file_mixture(rnn, kn, tok, held, [w])
        lines.append(f"| RNN + KN {order}-gram, w = {w:.2f} (chosen on the run's validation text) | {mix.tokens:,} | "
                     f"{mix.loss:.4f} | {mix.perplexity:.2f} | {mix.bits_per_char:.4f} | "
                     f"{time.perf_counter() - t:.1f} |")  # fmt: skip
    lines += ["", f"Best KN order here: {best_order}.", ""]
    text = prefix(held, level, dyn_tokens, tok)
    lines += [
        f"Dynamic evaluation on the first {len(tok.encode(text)):,} tokens of {held.name} "
        "(static and dynamic from the same pass; SGD on each segment's mean NLL, eval mode, state carried):",
        "",
        "| segment | lr | static loss | dynamic loss | gain (nats/token) | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for seg in segments:
        for lr in lrs:
            t = time.perf_counter()
            st, dy = evaluate_text_dynamic(rnn, tok, text, DynamicOptions(lr=lr, segment=seg))
            lines.append(f"| {seg} | {lr:g} | {st.loss:.4f} | {dy.loss:.4f} | {st.loss - dy.loss:+.4f} | "
                         f"{time.perf_counter() - t:.1f} |")  # fmt: skip
            print(lines[-1], flush=True)
    return lines + [""]


def sweep(checkpoints: list[Path], chars: int, grid: list[tuple[str, int, float]]) -> list[str]:
    """Dynamic evaluation of already trained runs on the first `chars` characters of each run's own held-out
    end (the last 10% of its corpus, cut at a line end): static and dynamic loss and chars/s per grid point."""
    out = [
        "| corpus | rule | segment | lr | decay | static loss | dynamic loss | gain (nats/token) | chars/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ckpt in checkpoints:
        rnn, tok, info = load_for_inference(ckpt)
        assert isinstance(rnn, RNNLanguageModel)
        config = TrainConfig.from_dict(info.train_config)
        corpus = Path(config.data.corpus[0])
        text = corpus.read_bytes()[split_offset(corpus_files([corpus]), 0.1) :].decode("utf-8")
        text = text[: text.rfind("\n", 0, chars) + 1]
        train_ids = prepare_data(config, tok).train_ids
        stats: dict[int, list[torch.Tensor]] = {}
        for rule, segment, lr in grid:
            decay = RMS_DECAY if rule == "rms" else 0.0
            rms = None
            if rule == "rms":
                if segment not in stats:
                    stats[segment] = gradient_rms(rnn, train_ids[-RMS_TOKENS:], segment)
                rms = stats[segment]
            t0 = time.perf_counter()
            options = DynamicOptions(lr=lr, segment=segment, decay=decay, rule=rule)
            static, dyn = evaluate_text_dynamic(rnn, tok, text, options, rms=rms)
            sec = time.perf_counter() - t0
            out.append(
                f"| {corpus.name} | {rule} | {segment} | {lr:g} | {decay:g} | {static.loss:.4f} | {dyn.loss:.4f} "
                f"| {static.loss - dyn.loss:+.4f} | {len(text) / sec:,.0f} |"
            )
            print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=180.0, help="seconds of RNN training per setup")
    ap.add_argument("--dynamic-tokens", type=int, default=20_000)
    ap.add_argument("--lrs", default="0.01,0.03,0.1,0.3,1")
    ap.add_argument("--segments", default="20,50")
    ap.add_argument("--only", choices=["char", "word"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_dynamic.md")
    ap.add_argument("--sweep", type=Path, nargs="+", help="only sweep dynamic evaluation on these trained runs")
    ap.add_argument("--sweep-chars", type=int, default=20_000)
    ap.add_argument("--grid", default="sgd:20:0.03,sgd:20:0.1,sgd:20:0.3,sgd:50:0.1,sgd:50:0.3,sgd:50:1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.sweep:
        grid = [(r, int(n), float(lr)) for r, n, lr in (g.split(":") for g in args.grid.split(","))]
        print("\n".join(sweep(args.sweep, args.sweep_chars, grid)))
        return
    os.environ.setdefault("CHARLM_CACHE_DIR", str(OUT / "token-cache"))
    OUT.mkdir(parents=True, exist_ok=True)
    lrs = [float(x) for x in args.lrs.split(",")]
    segments = [int(x) for x in args.segments.split(",")]
    load = os.getloadavg()[0]
    body = []
    for setup in setups():
        if args.only in (None, setup["name"]):
            body += run(setup, args.budget, args.dynamic_tokens, lrs, segments)
            print("\n".join(body), flush=True)
    head = [
        "# Kneser-Ney, interpolation and dynamic evaluation",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {cpu_name()}, {os.cpu_count()} cores (one torch thread), "
        f"Python {platform.python_version()}, torch {torch.__version__}; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (a shared machine: times are noisy). "
        f"Command: `python benchmarks/bench_dynamic.py {' '.join(sys.argv[1:])}`.",
        "",
    ]
    args.out.write_text("\n".join(head + body), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
