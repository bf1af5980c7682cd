"""Process set-up shared by the commands: glibc's malloc keeps freed memory for reuse."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from charlm.runtime.devices import glibc, retain_freed_memory
from charlm.training import loop, train
from charlm.training.config import TrainConfig

# 30 allocations of 64 MiB, each written and freed, as a training step's tensors are: the page
# faults of the last 10 (the first ones grow the heap until a freed block fits the aligned request)
PROBE = """
import resource, sys, torch
from charlm.runtime.devices import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
for i in range(30):
    if i == 20:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 * 2**20)
    del t
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    applied, count = out.stdout.split()
    return applied, int(count)


@pytest.mark.skipif(not glibc(), reason="glibc's malloc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    applied, retained = faults("retain")
    _, plain = faults("plain")
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert applied == "True"
    assert plain >= 9 * pages  # each allocation maps fresh pages: the kernel zero-fills them again
    assert retained <= pages // 10  # the same pages, reused


def test_the_users_malloc_tunables_win(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX_", "2")
    assert retain_freed_memory.__wrapped__() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert retain_freed_memory.__wrapped__() is False


def test_a_cpu_run_asks_for_freed_memory_to_be_retained(tiny_corpus, out_dir, monkeypatch):
    calls: list[bool] = []
    monkeypatch.setattr(loop, "retain_freed_memory", lambda: calls.append(True) or False)
    config = TrainConfig.from_options(
        corpus=(str(tiny_corpus),), out=str(out_dir), hidden_size=8, emb_size=4, num_layers=1, batch_size=2,
        bptt=8, max_steps=2, eval_interval=2, device="cpu",
    )  # fmt: skip
    assert train(config).step == 2
    assert len(calls) == 1
