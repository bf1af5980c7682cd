"""Process set-up shared by the commands: glibc's malloc keeps freed memory for reuse."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from charlm.devices import retain_freed_memory


def glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


# 30 allocations of 64 MiB, each written and freed, as a training step's tensors are: the page
# faults of the last 10 (the first ones grow the heap until a freed block fits the aligned request)
PROBE = """
import resource, sys, torch
from charlm.devices import retain_freed_memory
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
