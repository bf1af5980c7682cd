"""Reading many prompts of different lengths at once, for decoding many sequences (`DecodeBatch`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from charlm.models.protocol import State


@torch.no_grad()
def read_many(model: Any, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, State]:
    """Read prompts from the zero state with `model` (an `RNNLanguageModel`) as one packed batch (eval
    mode): -> each prompt's next-token logits (B, V) and its state after its last token (each (L, B, H)).

    One fused pass per layer over the packed sequences instead of one pass per prompt, with the prompts'
    results equal to reading each alone up to rounding. The caller bounds B x longest x H."""
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    ids = nn.utils.rnn.pad_sequence([torch.tensor(list(p), dtype=torch.long) for p in prompts], batch_first=True)
    x: Any = nn.utils.rnn.pack_padded_sequence(
        model.embedding(ids.to(model.device)), lengths, batch_first=True, enforce_sorted=False
    )
    states: list[tuple[torch.Tensor, ...]] = []
    for layer in model.layers:
        x, hy = layer(x)  # a PackedSequence; hy in the prompts' order, each (1, B, H)
        states.append(hy if isinstance(hy, tuple) else (hy,))
    out, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True)  # (B, T, H)
    last = out[torch.arange(len(prompts), device=out.device), (lengths - 1).to(out.device)]  # (B, H)
    if model.projection is not None:
        last = model.projection(last)
    logits = model.log_probs(last) if model.clusters is not None else model.decoder(last)  # (B, V)
    return logits, tuple(torch.cat([s[i] for s in states], 0) for i in range(model.num_state_tensors))
