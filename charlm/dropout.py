"""Regularisers for recurrent LMs, one small unit each (after AWD-LSTM).

- `locked_dropout`: one mask per sequence, repeated at every time step
  (variational dropout, Gal & Ghahramani).
- `embedding_dropout`: drops whole word types from the embedding matrix.
- `drop_weight`: DropConnect on a weight matrix (AWD-LSTM's weight drop on W_hh).

All are pure functions of their inputs and identity when not training or p == 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout with one mask per sequence, shared across time.

    x: (B, T, D). The mask is (B, 1, D), so unit d of sequence b is either
    dropped at every step or kept at every step.
    """
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)  # (B, 1, D)
    return x * mask


def seq_dropout(x: torch.Tensor, p: float, training: bool, locked: bool) -> torch.Tensor:
    """Locked (variational) or ordinary per-element dropout on (B, T, D) activations."""
    if locked:
        return locked_dropout(x, p, training)
    return F.dropout(x, p, training)


def embedding_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole rows (word types) of an embedding matrix, rescaling the rest.

    weight: (V, E) -> (V, E) with each row zeroed with probability p.
    """
    if not training or p == 0.0:
        return weight
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - p) / (1.0 - p)  # (V, 1)
    return weight * mask


def drop_weight(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """DropConnect: zero each entry of a weight matrix with probability p (rescaled)."""
    return F.dropout(weight, p, training)
