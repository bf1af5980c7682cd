"""What the processes of a torchrun job agree on: rank 0 decides (and writes), every rank hears the same.

One process (no torchrun) runs each `produce` itself; nothing waits on a collective.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from charlm.runtime import DistContext


def share_json(dctx: DistContext, device: torch.device, produce: Callable[[], Any]) -> Any:
    """`produce()` run on rank 0, its JSON-ready result given to every rank (rank 0's error raised on each)."""
    return json.loads(dctx.share_from_main(lambda: json.dumps(produce()).encode(), device))


def agree_to_stop(
    dctx: DistContext, device: torch.device, out_of_time: bool, asked: bool, elapsed: float
) -> tuple[bool, bool, float]:
    """Whether any rank is out of time or was asked to stop, and the longest elapsed time: the same on every
    rank, so all stop at the same step (one collective; the loop asks at log intervals only)."""
    t, a, seconds = dctx.all_max([float(out_of_time), float(asked), elapsed], device)
    return bool(t), bool(a), seconds
