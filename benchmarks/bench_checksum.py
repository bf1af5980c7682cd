"""What checking a checkpoint's SHA-256 costs when loading it (issue 20), run by hand.

    python benchmarks/bench_checksum.py [--repeats 20] [--threads N] [--out benchmarks/results_checksum.md]

Writes the default char model's shape (2-layer LSTM, hidden 512, embedding 64,
vocabulary 65) with `write_inference_checkpoint` to a temporary directory and
times `load_for_inference` with and without verification, alternating the two
so that a machine that slows down mid-run slows both; reports the medians, and
the digest alone (`tensor_digest` over the loaded tensors).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import string
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from charlm.checkpoint import BEST, load_for_inference, write_inference_checkpoint
from charlm.checkpoint.tensors import load_tensors, tensor_digest
from charlm.data.tokenizers import fit_tokenizer
from charlm.models.rnn import ModelConfig, RNNLanguageModel

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """lscpu's model name (platform.processor() is empty on most Linux systems)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name:")]
    return names[0] if names else "unknown CPU"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_checksum.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    text = (string.ascii_letters + string.digits + " .,:;!?'-\n")[:64]  # 64 characters + <unk> = 65 ids
    tok = fit_tokenizer("char", text)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, num_layers=2, hidden_size=512, emb_size=64))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_inference_checkpoint(Path(tmp) / "ckpt", model, tok)
        size = (ckpt / BEST).stat().st_size
        load_for_inference(ckpt)  # warm: imports, page cache
        verified, unverified, digest = [], [], []
        for _ in range(args.repeats):
            verified.append(timed(lambda: load_for_inference(ckpt, verify=True)))
            unverified.append(timed(lambda: load_for_inference(ckpt, verify=False)))
            tensors, _ = load_tensors(ckpt / BEST, verify=False)
            digest.append(timed(lambda t=tensors: tensor_digest(t)))
    load_after = os.getloadavg()[0]

    med_v, med_u, med_d = (statistics.median(x) * 1000 for x in (verified, unverified, digest))
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    threads = f"{args.threads} thread{'s' if args.threads != 1 else ''}"
    report = f"""# Checkpoint verification cost

Run {when} on {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({threads}),
Python {platform.python_version()}. Load average {load_before:.1f} at the start, {load_after:.1f} at the end
(the machine is shared: figures are noisy).

Model: {model.config.num_layers}x{model.config.hidden_size} {model.config.cell}, embedding {model.config.emb_size},
vocabulary {tok.vocab_size} ({model.num_parameters():,} parameters); best.safetensors {size / 2**20:.1f} MiB,
in the page cache. `load_for_inference` ({BEST}), median of {args.repeats}, the two alternating:

| load | median ms | min ms | max ms |
|---|---:|---:|---:|
| verified (default) | {med_v:.1f} | {min(verified) * 1000:.1f} | {max(verified) * 1000:.1f} |
| --no-verify | {med_u:.1f} | {min(unverified) * 1000:.1f} | {max(unverified) * 1000:.1f} |
| the digest alone (`tensor_digest`) | {med_d:.1f} | {min(digest) * 1000:.1f} | {max(digest) * 1000:.1f} |

Verification costs {med_v - med_u:+.1f} ms a load, {med_v / med_u:.2f}x the unverified load
(SHA-256 over {size / 2**20:.1f} MiB at {size / 2**20 / (med_d / 1000):.0f} MiB/s, hashed in place).

Reproduce: `python benchmarks/bench_checksum.py --repeats {args.repeats} --threads {args.threads}`.
"""
    args.out.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
