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

import numpy as np
import torch

from charlm.errors import ConfigError


def to_tensor(ids: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Token ids (any integer numpy dtype) -> a 1-D int64 tensor."""
    if isinstance(ids, torch.Tensor):
        return ids.long().reshape(-1)
    return torch.from_numpy(np.asarray(ids, dtype=np.int64).reshape(-1))


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D stream into `batch_size` contiguous rows, dropping the remainder.

    ids: (N,) -> (B, N // B). Row b is ids[b * L : (b + 1) * L].
    """
    n = ids.numel() // batch_size
    if n < 2:
        raise ConfigError(
            f"{ids.numel()} tokens cannot fill {batch_size} streams of at least 2 tokens; "
            "use a longer text or a smaller --batch-size"
        )
    return ids[: n * batch_size].view(batch_size, n)  # (B, L)


def num_windows(source: torch.Tensor, bptt: int) -> int:
    """How many windows `get_batch` yields over a (B, L) source: ceil((L - 1) / T)."""
    return (source.size(1) - 1 + bptt - 1) // bptt


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The window starting at column i: inputs (B, T') and targets (B, T'), T' = min(T, L - 1 - i).

    Targets are the inputs shifted by one step, so the last column is only a target.
    """
    t = min(bptt, source.size(1) - 1 - i)
    return source[:, i : i + t], source[:, i + 1 : i + 1 + t]  # (B, T'), (B, T')


def split_train_valid(text: str, valid_fraction: float) -> tuple[str, str]:
    """Hold out the last `valid_fraction` of a text, cut at a line start when one is near.

    The cut moves back to the closest preceding newline within 1% of the text
    (so that word and subword tokens are not split), else it stays where it is.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid fraction must be in (0, 1), got {valid_fraction}")
    cut = int(len(text) * (1.0 - valid_fraction))
    nl = text.rfind("\n", max(0, cut - len(text) // 100), cut)
    if nl > 0:
        cut = nl + 1
    return text[:cut], text[cut:]
