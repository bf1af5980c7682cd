"""What every language model gives the rest of charlm: one output shape, the state type, the model protocol.

A model's `forward(ids, state=None, *, targets=None, with_activations=False)` returns an
`LMOutput`, whatever the model. Evaluation, sampling and checkpoints hold a `LanguageModel`
(the protocol below) and call its members: none of them asks which class it holds, so a
new kind of model is one module here that satisfies the protocol, plus its config in
`charlm.models.kinds`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

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


class LMConfig(Protocol):
    """A model's options, enough to rebuild its shape; checkpoint.json stores `to_dict()` under its `kind`."""

    @property
    def kind(self) -> str: ...  # one of charlm.models.MODEL_KINDS
    @property
    def vocab_size(self) -> int: ...
    @property
    def state_floats(self) -> int: ...  # floats of one sequence's state (0: a state of token ids)
    def summary(self) -> str: ...  # "2 x 384 LSTM", "Kneser-Ney 5-gram"
    def to_dict(self) -> dict[str, Any]: ...


class LanguageModel(Protocol):
    """What evaluation, sampling and checkpoints call on a model: `RNNLanguageModel`, `KneserNeyModel`."""

    training: bool

    @property
    def kind(self) -> str: ...  # one of MODEL_KINDS, as its config's
    @property
    def config(self) -> LMConfig: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def device(self) -> torch.device: ...  # where its outputs are computed
    @property
    def exact_only(self) -> bool:
        """Scored as one exact stream, each row in one call: its state is its last tokens, so parallel
        segments and windows would only cost time (an n-gram model)."""
        ...

    @property
    def state_floats(self) -> int: ...  # floats of one sequence's state, as its config's

    def describe(self) -> str: ...  # a short label for reports: "RNN", "KN 5-gram"
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State: ...
    def __call__(self, ids: torch.Tensor, state: State | None = None) -> LMOutput: ...
    def forward(self, ids: torch.Tensor, state: State | None = None) -> LMOutput: ...
    def step(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One token per row: ids (B,) -> next-token logits (B, V) and the new state, in eval mode."""
        ...

    def token_nll(self, ids: torch.Tensor, state: State | None, targets: torch.Tensor) -> tuple[torch.Tensor, State]:
        """The NLL of each target (B, T) after reading ids (B, T) from `state`, and the state after ids:
        fp32 for a network, fp64 for an n-gram model; no (B, T, V) tensor where the model can avoid it."""
        ...

    def warm_state(self, ids: torch.Tensor) -> State:
        """The state after reading ids (B, T) from the zero state, nothing scored (parallel scoring's warm-up)."""
        ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...  # its weights: none for an n-gram model
    def train(self, mode: bool = True) -> Any: ...


def detach_state(state: State) -> State:
    """Keep the values, cut the graph: the edge of a truncated-BPTT window.

    window k:   x_1 .. x_T  ->  h_T ──detach──▶ h_0 of window k+1
    Gradients of window k+1 stop at its h_0, so memory stays O(T), not O(corpus).
    """
    return tuple(s.detach() for s in state)


def reorder_state(state: State, index: torch.Tensor) -> State:
    """Select/duplicate sequences along the batch: each (L, B, H) -> (L, len(index), H).

    Beam search uses this to follow each surviving hypothesis's parent.
    """
    return tuple(s.index_select(1, index) for s in state)
