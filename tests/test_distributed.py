"""Multi-process training through torchrun (gloo on the CPU stands in for NCCL on GPUs)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch

from charlm.checkpoint.store import load_for_inference
from charlm.runtime.distributed import DistContext


def test_single_process_context_is_inert():
    d = DistContext.from_env()
    assert not d.active and d.is_main
    assert d.all_sum([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]


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


def _collective_worker(rank: int, port: int, alive: torch.multiprocessing.SimpleQueue) -> None:
    """One rank of a two-process gloo group: are the tensors of its last collectives still held from Python?"""
    import os
    import weakref

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    os.environ["LOCAL_RANK"] = str(rank)
    d = DistContext.from_env()
    cpu = d.setup(torch.device("cpu"))
    assert d.all_max([float(rank)], cpu) == [1.0]
    after_reduce = [weakref.ref(t) for t in d._held]
    assert d.share_from_main(lambda: b"from rank 0", cpu) == b"from rank 0"
    after_share = [weakref.ref(t) for t in d._held]
    d.shutdown(clean=True)
    alive.put((rank, len(after_reduce), len(after_share), all(r() is not None for r in after_share)))


def test_collective_tensors_outlive_the_call_until_the_process_ends():
    """The cause of issue 20's SIGABRT at exit: a gloo worker thread that drops the last reference to a
    finished collective's Python tensor needs the GIL, which a finalizing interpreter no longer hands out.
    So the context keeps its latest collective's tensors (all_max: one, share_from_main: header and body)
    referenced from Python, and a clean shutdown leaves them there."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    alive = ctx.SimpleQueue()
    procs = [ctx.Process(target=_collective_worker, args=(r, port, alive)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    results = sorted(alive.get() for _ in procs)
    assert results == [(0, 1, 2, True), (1, 1, 2, True)]
