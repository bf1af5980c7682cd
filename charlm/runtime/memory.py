"""What memory a device has for this process, and the one-line refusal when a job needs more.

    available_bytes(device)      the CPU: MemAvailable, lowered by a cgroup limit; CUDA: the device's free memory
    decoding_bytes(...)          what a whole-result decoding (`charlm generate`) holds
    require(need, device, ...)   the one-line ConfigError when a need does not fit

`charlm.training.memory` estimates what training, validation and scoring need. A job is
refused above MARGIN of what is available, the rest being for the allocator's slack and
what an estimate misses.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from charlm.errors import ConfigError

MARGIN = 0.9
FLOAT = 4  # bytes: parameters, gradients, optimiser state and activations are float32
# Host bytes per generated token of each sequence a whole-result decoding holds until it ends (measured
# with getrusage: 94-147 for a batch of samples, 450-615 per beam slot, whose history keeps 2 x width
# candidates a step with back-pointers; rounded up).
SAMPLE_TOKEN_BYTES = 160
BEAM_TOKEN_BYTES = 640
# Copies of a decoding step's (sequences, V) scores: log-softmax, the filters' sort (values and int64
# indices), probabilities, a beam's candidate sums.
DECODE_LOGIT_COPIES = 6
# A cgroup "no limit" reads as a huge number (v1: 2^63 rounded down to a page).
_NO_LIMIT = 1 << 60

PROC_MEMINFO = Path("/proc/meminfo")
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory this process may still take on `device`: a CUDA device's free memory, else the host's."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available_bytes()  # the CPU, and the unified memory of an Apple GPU


def host_available_bytes() -> int:
    """The smaller of the kernel's MemAvailable and the headroom under every cgroup limit above this process.

    Without /proc (not Linux), the machine's physical memory: an optimistic figure,
    which may let a job through that fails later, but never refuses one that fits.
    """
    figures = [f for f in (_meminfo_available(), _cgroup_headroom()) if f is not None]
    if figures:
        return max(0, min(figures))
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return _NO_LIMIT  # nothing to measure: refuse nothing


def _meminfo_available() -> int | None:
    try:
        for line in PROC_MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """min over this process's cgroup and its ancestors of limit - (usage - inactive file cache), or None.

    cgroup v2 (memory.max, memory.current) or v1 (memory.limit_in_bytes,
    memory.usage_in_bytes); the page cache the kernel can drop does not count as used.
    """
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":  # v2: one unified hierarchy
            root = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else CGROUP_ROOT / "unified"
            files = ("memory.max", "memory.current", "inactive_file")
        elif "memory" in parts[1].split(","):
            root, files = (
                CGROUP_ROOT / "memory",
                ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
            )
        else:
            continue
        for directory in _cgroup_dirs(root, parts[2]):
            headroom = _headroom(directory, *files)
            if headroom is not None:
                best = headroom if best is None else min(best, headroom)
    return best


def _cgroup_dirs(root: Path, path: str) -> list[Path]:
    """The cgroup's directory and its ancestors up to the mount's root (a container sees its own cgroup as root)."""
    own = root / path.strip("/")
    dirs = [d for d in (own, *own.parents) if d == root or root in d.parents]
    return [d for d in dirs if d.is_dir()] or ([root] if root.is_dir() else [])


def _headroom(directory: Path, limit_file: str, usage_file: str, cache_key: str) -> int | None:
    try:
        limit_text = (directory / limit_file).read_text().strip()
        if limit_text == "max":
            return None
        limit = int(limit_text)
        if limit >= _NO_LIMIT:
            return None
        usage = int((directory / usage_file).read_text().strip())
    except (OSError, ValueError):
        return None
    return limit - usage + _stat(directory / "memory.stat", cache_key)


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def decoding_bytes(sequences: int, length: int, vocab: int, state: int, token_bytes: int) -> int:
    """What a whole-result decoding (`charlm.sampling.generate`) holds for `sequences` rows (samples, or beam
    slots) of up to `length` tokens: their history (`token_bytes` per token and row), each step's scores
    (DECODE_LOGIT_COPIES x vocab) and states (`state` floats a row)."""
    return sequences * (length * token_bytes + FLOAT * (DECODE_LOGIT_COPIES * vocab + 3 * state))


def gib(n: float) -> str:
    """Bytes for messages: MiB below one GiB, then GiB, TiB, PiB, EiB."""
    if n < 2**30:
        return f"{n / 2**20:.0f} MiB"
    for unit in ("GiB", "TiB", "PiB"):
        n /= 2**30 if unit == "GiB" else 2**10
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 2**10:.1f} EiB"


def where(device: torch.device | str) -> str:
    device = torch.device(device)
    return f"on {device}" if device.type == "cuda" else "here"


def require(need: int, device: torch.device | str, doing: str, fix: str, detail: str = "") -> None:
    """Raise a one-line ConfigError when `need` bytes are above MARGIN (90%) of what `device` has available.

    doing: what needs it ("training a 2x512 LSTM"); detail: what the figure counts;
    fix: the options to change ("use a smaller --hidden").
    """
    available = available_bytes(device)
    if need <= MARGIN * available:
        return
    counted = f" ({detail})" if detail else ""
    raise ConfigError(
        f"{doing} needs about {gib(need)}{counted}, more than the {gib(available)} available {where(device)}; {fix}"
    )
