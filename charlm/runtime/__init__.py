"""Where and how a run computes: devices, precision, and the processes of a multi-process run.

Other rooms import from here, not from the modules inside.
"""

from charlm.runtime.devices import (
    PRECISIONS,
    autocast,
    check_device_name,
    cpu_bf16_candidate,
    eval_mode,
    resolve_device,
    resolve_precision,
    retain_freed_memory,
)
from charlm.runtime.distributed import DistContext

__all__ = [
    "DistContext",
    "PRECISIONS",
    "autocast",
    "check_device_name",
    "cpu_bf16_candidate",
    "eval_mode",
    "resolve_device",
    "resolve_precision",
    "retain_freed_memory",
]
