"""Generation speed of the default char model on CPU: tokens/s and time per token.

    python benchmarks/bench_generate.py [--threads N] [--repeats 3]

Model: the default char shape at width 384 (2-layer LSTM, hidden 384, embedding 64; 384 is the width
charlm chooses for tinyshakespeare under a step or epoch limit) over the tinyshakespeare character
vocabulary, with random weights: speed does not depend on the weights' values (random weights only
make the text gibberish, and beam search never meets an <eos>: char models have none).

Measured, best of --repeats runs each, prompt "ROMEO:" included in the time:
- sampling one sequence through the streaming API (one host sync per token),
  at output lengths 100 and 2000: the time per token must be flat;
- 32 samples as one batch (`generate`, num_samples=32): tokens/s counts all 32;
- beam search, width 5, at lengths 100 and 2000: output tokens/s (a step
  advances all 5 hypotheses);
- the trap (shared/PERFORMANCE.md): the same sampling loop stepping through
  `nn.LSTM` at T = 1 (`model.forward` on one token) with oneDNN on, and off.

Prints a markdown table; results_generate.md keeps a dated copy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charlm.data.tokenizers import fit_tokenizer  # noqa: E402
from charlm.models.rnn import RNNLanguageModel  # noqa: E402
from charlm.sampling import DecodingOptions, generate, stream  # noqa: E402
from charlm.training import TrainConfig, autosize  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"
PROMPT = "ROMEO:"


class FusedStepModel(torch.nn.Module):
    """The slow path for contrast: each decoding step runs nn.LSTM over a window of T = 1."""

    def __init__(self, model: RNNLanguageModel) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config

    def forward(self, ids, state=None):
        return self.inner(ids, state)

    @torch.no_grad()
    def step(self, ids, state=None):
        fwd = self.inner(ids[:, None], state)  # (B, 1, V)
        logits, state = fwd.logits, fwd.state
        return logits[:, 0], state


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run_stream(model, tok, n: int, seed: int = 0) -> None:
    s = stream(model, tok, PROMPT, DecodingOptions(max_new_tokens=n), torch.Generator().manual_seed(seed))
    for _ in s:
        pass
    assert s.result is not None and s.result.num_tokens == n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = fit_tokenizer("char", CORPUS.read_text(encoding="utf-8"))
    torch.manual_seed(0)
    # The default char model's shape at width 384. What training.autosize leaves open until a run starts is given:
    # the width, and a CPU run's batch and rate with no dropout, which do not change decoding.
    train = TrainConfig.from_options(
        corpus=(str(CORPUS),), hidden_size=384, dropout=0.0, batch_size=autosize.default_batch("cpu"), lr=autosize.LR
    )
    cfg = train.model_config(tok.vocab_size)
    model = RNNLanguageModel(cfg).eval()
    fused = FusedStepModel(model).eval()
    r = args.repeats
    rows: list[tuple[str, int, int, float]] = []  # (what, batch, length, seconds)

    def record(what: str, batch: int, length: int, seconds: float) -> None:
        rows.append((what, batch, length, seconds))
        print(
            f"  {what:<44} {length:>5} tokens x {batch:>2}: {seconds:7.3f}s  {batch * length / seconds:9,.0f} tokens/s",
            file=sys.stderr,
            flush=True,
        )

    run_stream(model, tok, 20)  # warm-up: allocator, oneDNN primitives
    for n in (100, 2000):
        record(
            "sample, 1 sequence (stream)",
            1,
            n,
            best_time(lambda n=n: run_stream(model, tok, n), r if n <= 100 else max(1, r - 1)),
        )
    record(
        "sample, 1 sequence (generate)",
        1,
        500,
        best_time(
            lambda: generate(model, tok, PROMPT, DecodingOptions(max_new_tokens=500), torch.Generator().manual_seed(0)),
            r,
        ),
    )
    opts32 = DecodingOptions(max_new_tokens=300, num_samples=32)
    record(
        "sample, 32 sequences as one batch",
        32,
        300,
        best_time(lambda: generate(model, tok, PROMPT, opts32, torch.Generator().manual_seed(0)), r),
    )
    for n in (100, 2000):
        beam = DecodingOptions(strategy="beam", beam_width=5, max_new_tokens=n)
        record(
            "beam search, width 5",
            1,
            n,
            best_time(lambda beam=beam: generate(model, tok, PROMPT, beam), r if n <= 100 else 1),
        )
    for flag in (True, False):
        with contextlib.nullcontext() if flag else torch.backends.mkldnn.flags(enabled=False):
            name = f"trap: nn.LSTM at T=1, oneDNN {'on' if flag else 'off'}"
            run_stream(fused, tok, 10)
            record(name, 1, 300, best_time(lambda: run_stream(fused, tok, 300), r))

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"model: {cfg.num_layers}x{cfg.hidden_size} {cfg.cell.upper()}, emb {cfg.emb_size}, "
        f"vocab {tok.vocab_size}, {model.num_parameters():,} parameters, random weights\n"
    )
    print("| decoding | batch | new tokens | time (s) | tokens/s | ms per step |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, batch, length, seconds in rows:
        print(
            f"| {what} | {batch} | {length} | {seconds:.3f} | "
            f"{batch * length / seconds:,.0f} | {1000 * seconds / length:.3f} |"
        )
    per = {(w, n): s / n for w, b, n, s in rows}
    for what in ("sample, 1 sequence (stream)", "beam search, width 5"):
        ratio = per[(what, 2000)] / per[(what, 100)]
        print(f"\n{what}: time per token at 2000 / at 100 = {ratio:.2f}", end="")
    print()


if __name__ == "__main__":
    main()
