"""Regularisers for recurrent LMs, one small unit each (after AWD-LSTM).

- `locked_dropout`: one mask per sequence, repeated at every time step
  (variational dropout, Gal & Ghahramani).
- `embedding_dropout`: drops whole word types from the embedding matrix;
  `embed` looks ids up with the same dropout without touching the whole matrix.
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
    return weight * _type_mask(weight, p)[:, None]


def embed(ids: torch.Tensor, weight: torch.Tensor, p: float, training: bool, sparse_grad: bool = False) -> torch.Tensor:
    """Look up ids (B, T) in weight (V, E) with embedding dropout: (B, T, E).

    Equal to `F.embedding(ids, embedding_dropout(weight, p, training))`, with the same
    random draws (one per word type, for the whole batch), but the row mask is gathered
    at the ids instead of multiplied into the V x E matrix, so the backward touches only
    the rows looked up. With sparse_grad the lookup's gradient is sparse: for a weight
    tied to the decoder, whose dense gradient it is added to in the same backward, that
    skips zeroing and adding a V x E buffer every step (measured 5-10% of a 2x650
    word-level training step at a 13.8k vocabulary). Never for an untied weight: its
    gradient would stay sparse, which the fused optimizers refuse.
    """
    x = F.embedding(ids, weight, sparse=sparse_grad)
    if not training or p == 0.0:
        return x
    return x * _type_mask(weight, p)[ids].unsqueeze(-1).to(x.dtype)


def _type_mask(weight: torch.Tensor, p: float) -> torch.Tensor:
    """Embedding dropout's draw: (V,) each word type kept with probability 1 - p, rescaled."""
    return weight.new_empty(weight.size(0)).bernoulli_(1.0 - p) / (1.0 - p)


def drop_weight(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """DropConnect: zero each entry of a weight matrix with probability p (rescaled)."""
    return F.dropout(weight, p, training)
