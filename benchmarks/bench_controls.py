"""Plain sampling with every decoding control off, timed for a before/after comparison (issue 23: no control
may slow plain sampling by more than 10% when it is off); optionally the controls on, for their cost.

    python benchmarks/bench_controls.py [--root DIR] [--threads 1] [--repeats 5] [--controls]

--root is the directory holding the `charlm` package to time (default: this checkout), so an older
commit unpacked elsewhere (`git archive COMMIT charlm | tar -x -C DIR`) runs the same measurement.
Model: the default char shape at width 384 with random weights, as in bench_generate.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--controls", action="store_true", help="also time sampling with the controls on")
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    import torch

    from charlm.data.tokenizers import fit_tokenizer
    from charlm.models.rnn import RNNLanguageModel
    from charlm.sampling import DecodingOptions, generate, stream
    from charlm.training import TrainConfig, autosize

    torch.set_num_threads(args.threads)
    tok = fit_tokenizer("char", CORPUS.read_text(encoding="utf-8"))
    torch.manual_seed(0)
    train = TrainConfig.from_options(
        corpus=(str(CORPUS),), hidden_size=384, dropout=0.0, batch_size=autosize.default_batch("cpu"), lr=autosize.LR
    )
    model = RNNLanguageModel(train.model_config(tok.vocab_size)).eval()

    def best(fn) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    def streamed(options) -> None:
        for _ in stream(model, tok, "ROMEO:", options, torch.Generator().manual_seed(0)):
            pass

    cases = [
        ("stream, 1 x 500", 500, lambda o: streamed(o), {}),
        (
            "generate, 32 x 300",
            32 * 300,
            lambda o: generate(model, tok, "ROMEO:", o, torch.Generator().manual_seed(0)),
            {"num_samples": 32},
        ),
    ]
    length = {"stream, 1 x 500": 500, "generate, 32 x 300": 300}
    streamed(DecodingOptions(max_new_tokens=20))  # warm-up
    for name, tokens, fn, extra in cases:
        o = DecodingOptions(max_new_tokens=length[name], **extra)
        s = best(lambda o=o, fn=fn: fn(o))
        print(f"{args.root} | {name} | off | {s:.3f} s | {tokens / s:,.0f} tokens/s", flush=True)
        if args.controls:
            on = {"repetition_penalty": 1.2, "no_repeat_ngram_size": 4, "min_p": 0.05, "min_new_tokens": 10}
            o = DecodingOptions(max_new_tokens=length[name], **extra, **on)
            s = best(lambda o=o, fn=fn: fn(o))
            print(f"{args.root} | {name} | on | {s:.3f} s | {tokens / s:,.0f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
