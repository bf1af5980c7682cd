"""Multi-process training through torchrun (gloo on the CPU stands in for NCCL on GPUs)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch

from charlm.checkpoint import load_for_inference
from charlm.distributed import DistContext


def test_single_process_context_is_inert():
    d = DistContext.from_env()
    ids = torch.arange(10)
    assert not d.active and d.is_main
    assert d.shard(ids) is ids
    assert d.all_sum([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]


def test_each_rank_reads_its_own_contiguous_shard():
    ids = torch.arange(11)
    assert DistContext(rank=0, world=2).shard(ids).tolist() == [0, 1, 2, 3, 4]
    assert DistContext(rank=1, world=2).shard(ids).tolist() == [5, 6, 7, 8, 9]


def test_torchrun_two_processes_train_and_resume(tiny_corpus, tmp_path):
    out = tmp_path / "ddp"
    base = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "charlm",
        "train",
        str(tiny_corpus),
        "--out",
        str(out),
    ]
    opts = [
        "--hidden",
        "16",
        "--emb",
        "8",
        "--layers",
        "1",
        "--batch-size",
        "2",
        "--bptt",
        "16",
        "--eval-interval",
        "10",
        "--log-interval",
        "5",
        "--eval-streams",
        "2",
        "--quiet",
    ]
    first = subprocess.run(base + opts + ["--max-steps", "20"], capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(
        base + ["--resume", "--max-steps", "30", "--quiet"], capture_output=True, text=True, timeout=240
    )
    assert second.returncode == 0, second.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["type"] == "valid"]
    assert [r["step"] for r in valid] == [10, 20, 30]  # rank 0 alone writes: no duplicates
    model, tok, _ = load_for_inference(out)
    assert all(math.isfinite(r["valid_loss"]) for r in valid)
    assert valid[-1]["valid_loss"] < math.log(tok.vocab_size)  # it learned something
