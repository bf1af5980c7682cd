"""Truncated-BPTT plumbing: a token stream -> B parallel streams -> windows of T steps.

stream:  a b c d e f g h i j k l m n o p q r s t u v w x      (N tokens)
batchify(B=4):
         a b c d e f        <- stream 0
         g h i j k l        <- stream 1
         m n o p q r        <- stream 2
         s t u v w x        <- stream 3                         (B, N // B)
get_batch(i=0, T=3):  x = columns 0..2, y = columns 1..3 (inputs shifted by one)
the state after window k is the (detached) initial state of window k+1,
so row b reads one continuous text across windows.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from charlm.errors import ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported where a tensor is made, not here: the data room's door imports this module,
# and reading or tokenizing a corpus must not import torch (seconds, and a GPU runtime's start-up)


def to_tensor(ids: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Token ids (any integer numpy dtype) -> a 1-D int64 tensor (a copy of the whole: for small texts)."""
    import torch

    if isinstance(ids, torch.Tensor):
        return ids.long().reshape(-1)
    return torch.from_numpy(np.asarray(ids, dtype=np.int64).reshape(-1))


Ids = TypeVar("Ids", np.ndarray, "torch.Tensor")


def batchify(ids: Ids, batch_size: int) -> Ids:
    """Cut a 1-D stream into `batch_size` contiguous rows, dropping the remainder.

    ids: (N,) -> (B, N // B), a view: a memory-mapped corpus stays on disk. Row b is
    ids[b * L : (b + 1) * L].
    """
    n = len(ids) // batch_size
    if n < 2:
        raise ConfigError(
            f"{len(ids)} tokens cannot fill {batch_size} streams of at least 2 tokens; "
            "use a longer text or a smaller --batch-size"
        )
    return ids[: n * batch_size].reshape(batch_size, n)  # (B, L)


def num_windows(source: np.ndarray | torch.Tensor, bptt: int, start: int = 0) -> int:
    """How many windows `get_batch` yields over a (B, L) source from column `start`: ceil((L - 1 - start) / T)."""
    return max(0, (source.shape[1] - 1 - start + bptt - 1) // bptt)


def get_batch(source: np.ndarray | torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The window starting at column i: inputs (B, T') and targets (B, T'), T' = min(T, L - 1 - i), int64.

    Targets are the inputs shifted by one step, so the last column is only a target.
    A numpy source (a memory map in the smallest id dtype) is widened to int64 one
    window at a time, never as a whole.
    """
    t = min(bptt, source.shape[1] - 1 - i)
    if isinstance(source, np.ndarray):
        import torch

        window = torch.from_numpy(np.asarray(source[:, i : i + t + 1], dtype=np.int64))  # (B, T' + 1)
        return window[:, :-1], window[:, 1:]  # (B, T'), (B, T')
    return source[:, i : i + t], source[:, i + 1 : i + 1 + t]  # (B, T'), (B, T')


def epoch_offset(seed: int, epoch: int, bptt: int) -> int:
    """The column epoch `epoch` starts at: 0 for the first, then a repeatable random shift in [0, bptt).

    Later passes start elsewhere, so the windows, and so the points where the
    gradient is cut, do not repeat exactly from epoch to epoch.
    """
    return 0 if epoch == 0 else random.Random(seed * 1_000_003 + epoch).randrange(bptt)


def window_length(seed: int, step: int, bptt: int, jitter: bool) -> int:
    """The length of step `step`'s window: bptt, or with jitter AWD-LSTM's random length.

    AWD-LSTM: the base is bptt (95%) or bptt / 2 (5%), the length drawn from
    N(base, 5), at least 5 and at most bptt + 20; repeatable from (seed, step).
    """
    if not jitter:
        return bptt
    rng = random.Random(seed * 1_000_033 + step)
    base = bptt if rng.random() < 0.95 else bptt / 2
    return int(max(5, min(bptt + 20, round(rng.gauss(base, 5)))))
