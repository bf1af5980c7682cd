"""Devices and numeric precision, shared by train, generate and perplexity.

`resolve_device` turns `--device` into a torch device; `resolve_precision`
turns `--precision` into an autocast dtype (or None for plain fp32), and never
assumes a CPU feature: the machines charlm runs on range from CPUs with native
bf16 (AVX512-BF16, AMX) to ones where oneDNN has no bf16 LSTM at all (AVX2
only), so CPU bf16 is tried once per cell and refused with a one-line error
where it does not run. On CUDA, bf16 is used only where the GPU runs it
natively (compute capability 8.0 and up); older GPUs get fp16 with loss scaling.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator

import torch

from charlm.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_device_name(name: str) -> None:
    """Refuse a --device value that names no device kind charlm knows (without touching hardware)."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; use {DEVICE_CHOICES}")


def resolve_device(name: str) -> torch.device:
    """--device: cpu, cuda, cuda:N, mps, or auto (a CUDA GPU when there is one, else the CPU)."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {name}: this machine has {count} CUDA device(s); use cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


# ------------------------------------------------------------------ memory
RETAINED = 1 << 30  # bytes: glibc's mmap and trim thresholds under retain_freed_memory


def glibc() -> bool:
    """Whether this process's C library is glibc (asked at run time)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not glibc, or no confstr on this system
        return False


@functools.cache
def retain_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse rather than hand it back to the kernel.

    A training step allocates and frees the same large tensors every step (activations,
    oneDNN's LSTM workspace, gradients as big as the embedding). glibc serves blocks
    above its mmap threshold (dynamic, at most 32 MiB) with fresh mappings and returns
    free memory at the top of its heap to the kernel, so each step faults the same pages
    in again, zero-filled: ~20,000 page faults a step for the README's 2x650 word model,
    and 5-15% of its step time on a 2-core Xeon (benchmarks/results_word.md). With both
    thresholds at 1 GiB freed blocks are reused: a process keeps up to that much memory
    it no longer uses, which a training run would soon take again anyway.

    Only where the C library is glibc (asked at run time) and the user set none of its
    malloc tunables (MALLOC_*_ or GLIBC_TUNABLES: theirs win); elsewhere nothing.
    Returns whether it was applied. A training run on a CPU calls it before its first
    step. The price is peak memory where large blocks of different sizes take turns
    (training and validation windows): a 50-step run on a 1 GB char corpus peaked at
    1,094 MB instead of 736 MB, its word twin at 1,276 MB instead of 1,488 MB
    (benchmarks/results_bigdata.md). Setting any MALLOC_*_ variable, for example
    glibc's default MALLOC_TRIM_THRESHOLD_=131072, keeps glibc's own behaviour.
    """
    if not glibc():
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, RETAINED)) and bool(mallopt(m_trim_threshold, RETAINED))


# ------------------------------------------------------------------ precision
def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16), not just oneDNN's emulation."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_bf16_candidate(cell: str) -> bool:
    """Whether bf16 autocast may pay off for a `cell` layer on this CPU: native bf16 instructions, and torch runs it.

    Without the instructions oneDNN emulates bf16, slower than fp32; with them it is
    still measured against fp32 before use (`charlm.training.autosize.faster_precision`).
    """
    return cpu_has_native_bf16() and cpu_bf16_supported(cell)


@functools.cache
def cpu_bf16_supported(cell: str) -> bool:
    """Whether CPU bf16 autocast runs a `cell` layer (forward and backward) on this machine.

    Tried once on a tiny layer: oneDNN refuses to build a bf16 LSTM primitive on
    CPUs without AVX-512 ("could not create a primitive descriptor"), while GRU and
    Elman layers fall back to other kernels.
    """
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = layer(torch.randn(2, 3, 4))
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def resolve_precision(name: str, device: torch.device, cell: str = "lstm") -> torch.dtype | None:
    """The autocast dtype for --precision on `device`, or None for plain fp32.

    auto: bf16 on CUDA GPUs that run it natively (compute capability >= 8.0), fp16
    (with loss scaling) on older ones, fp32 elsewhere (on a CPU training decides
    between fp32 and bf16 by measuring both, see `charlm.training.autosize`). bf16 on a CPU only where
    the CPU runs it for this cell, else a one-line error naming the missing feature.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; choose {', '.join(PRECISIONS)}")
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
        if name == "auto":
            return torch.bfloat16 if native_bf16 else torch.float16
        if name == "bf16" and not native_bf16:
            major, minor = torch.cuda.get_device_capability(device)
            raise ConfigError(
                f"--precision bf16: this GPU (compute capability {major}.{minor}) has no native bf16; use fp16 or auto"
            )
        return torch.bfloat16 if name == "bf16" else torch.float16
    if name == "fp16":
        raise ConfigError("--precision fp16 needs a CUDA device; use fp32 (or bf16 where the CPU supports it)")
    if device.type != "cpu":
        raise ConfigError(f"--precision {name} is not supported on {device.type}; use fp32")
    if not cpu_bf16_supported(cell):
        missing = "AVX-512 (oneDNN's bf16 kernels)" if "avx512f" not in cpu_flags() else "bf16 support"
        raise ConfigError(
            f"--precision bf16: this CPU lacks {missing} for a {cell.upper()} layer in torch; "
            "use --precision fp32 or auto"
        )
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for `dtype` on `device`, or a no-op context for fp32 (dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put `model` in eval mode for the block and give back the mode it had, however the block ends.

    Used as `with eval_mode(model):` around evaluation and decoding, including
    generators abandoned half-way (Ctrl-C in a stream), whose `finally` runs on close.
    """
    was_training = model.training
    model.train(False)
    try:
        yield model
    finally:
        model.train(was_training)
