"""What every language model gives the rest of charlm: one output shape and the state type.

A model's `forward(ids, state=None, *, targets=None, with_activations=False)` returns an
`LMOutput`, whatever the model: evaluation, sampling, training and checkpoints read its
fields by name and never ask which class they hold.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

State = tuple[torch.Tensor, ...]  # a recurrent state: tensors of (L, B, H); an n-gram model's history


class LMOutput(NamedTuple):
    """A forward pass over a window of ids (B, T).

    logits: (B, T, V) next-token scores (log-probabilities for an adaptive softmax or an
        n-gram model; valid logits either way), when no targets were given, else None.
    loss: the mean NLL of the targets (a scalar, fp32), when targets were given, else None.
    state: the state after the window.
    activations: (dropped, raw), each (B, T, H), the last layer's output after and before
        the output dropout (AR and TAR penalise them), when asked for, else None.
    """

    logits: torch.Tensor | None
    loss: torch.Tensor | None
    state: State
    activations: tuple[torch.Tensor, torch.Tensor] | None = None
