"""What decoding needs from a model and a tokenizer, so tests can script either."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch

from charlm.models import State


class DecodingModel(Protocol):
    """A model decoding can drive: RNNLanguageModel, an n-gram model, or a scripted table in tests."""

    training: bool

    def __call__(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]: ...
    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]: ...
    def step(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]: ...
    def train(self, mode: bool = True) -> Any: ...


class TextCodec(Protocol):
    """The part of a tokenizer decoding uses (charlm.data.tokenizers.Tokenizer has it)."""

    @property
    def kind(self) -> str: ...
    @property
    def unk_id(self) -> int | None: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def unknown_units(self, text: str) -> list[str]: ...
