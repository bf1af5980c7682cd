"""The seam between the training loop and what it trains: the `Task` protocol.

The loop (`charlm.training.loop.Loop`) owns what every run trained by gradient steps
shares: the optimiser, the loss scaler, clipping, the learning-rate schedule, the
limits, stop signals, the validation cadence, agreement between the processes of a
torchrun job, the guards (divergence, not learning, overfitting), logging, and the
checkpoint saves (best and last, each whole, through `RunWriter`). A task owns the
rest: its model, its batches and their order, its loss (regularisers included), its
validation figures and sample, its baselines, and what its checkpoint holds besides
weights, optimiser and counters. One step of the loop:

    batch = task.next_batch(state)                  # the task's data, on the device
    with autocast: loss, objective = task.loss(net, batch)
    apply_gradients(optimizer, scaler, objective)   # the loop's: backward, clip, step
    task.advance(state, batch)                      # the task's position in its epoch

The tasks, by `--model` (`charlm.training.run.TASKS`): `rnn`, the truncated-BPTT
language model (tasks/lm.py); `tag`, the sequence tagger (tasks/tag.py). `kn`, the Kneser-Ney
n-gram model, is estimated in one pass, not trained by steps: `train()` runs it without the loop
(tasks/ngram.py).

Adding a task (a BiLSTM-CRF tagger, a sentence classifier) takes three pieces, and
no second trainer:

1. tasks/<name>.py: a class with the members of `Task`. Its batches are `Batch`es:
   inputs (token ids and lengths), targets (tags, or labels), size (the labels the
   loss is a mean over: it weights the logged loss). `loss` returns the CRF's
   negative log-likelihood per tag (or the cross-entropy per sentence) and the
   objective (the same, plus any regulariser). `validate` returns figures with a
   "valid_loss" and any others (accuracy, F1); best, --patience and the guards follow
   its "valid_criterion" (lower is better: a tagger's 1 - accuracy or 1 - F1), else
   the loss; `sample` returns None; `baselines` a majority-class figure, or
   None. `columns` counts the task's units per epoch (sentences), `state.pos` where
   the next batch starts.
2. an opener, `open_task(config, dctx, device, progress, info) -> OpenedTask`: read
   and check the data (with its labels), choose what the user left open, then
   build the task after `torch.manual_seed(config.run.seed)`. `info` is the checkpoint
   of a resumed run (its tokenizer and tag set), None for a new one.
3. a line in `charlm.training.tasks.TASKS` under its `--model` name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from charlm.runtime import DistContext
from charlm.training.config import TrainConfig
from charlm.training.state import RunState

if TYPE_CHECKING:
    from charlm.checkpoint import CheckpointInfo
    from charlm.checkpoint import store as ckpt


@dataclass(frozen=True)
class Batch:
    """One step's data, on the device: what the model reads, what it is scored against, how much of it."""

    inputs: Any  # a tensor (an LM: ids (B, T)) or a tuple of them (a tagger: ids and lengths)
    targets: Any  # an LM: the next ids (B, T); a tagger: tags; a classifier: labels (B,)
    size: int  # what the loss is a mean over (tokens, tags, sentences): weights the logged loss
    lr_scale: float = 1.0  # multiplies this step's learning rate (AWD-LSTM's variable windows scale it)


class Task(Protocol):
    """What one kind of training brings to the loop (see the module doc)."""

    fingerprint: str  # the training data's: a resume on other data is refused
    valid_fingerprint: str  # the validation data's: when it changes, best is chosen again
    columns: int  # the task's units per epoch: an epoch ends when `state.pos` reaches it
    diverged_above: float  # a loss above this (or not finite) stops the run as diverged

    @property
    def model(self) -> torch.nn.Module:
        """What the optimiser updates and best/last store (its options: `model.config`)."""

    def begin(self, writer: ckpt.RunWriter | None, train_config: dict[str, Any]) -> None:
        """A new run: the model's start, and the run's files (`writer.begin`: model options, tokenizer)."""

    def next_batch(self, state: RunState) -> Batch:
        """The step's batch, from `state.step` and `state.pos` (deterministic: a resume continues exactly)."""

    def loss(self, net: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, objective), both scalars with their graph: the loss as reported, the objective to minimise
        (the loss plus regularisers). `net` is the model, or its DDP wrapper in a torchrun job."""

    def advance(self, state: RunState, batch: Batch) -> None:
        """Move `state.pos` past the batch; at the end of the epoch, `state.epoch` and the next start."""

    def validate(self) -> dict[str, Any]:
        """The figures of one validation (rank 0): "valid_loss" and any others; recorded as they are."""

    def sample(self) -> dict[str, str] | None:
        """What the model makes of a prompt at each validation ({"prompt", "text"}), or None."""

    def baselines(self) -> dict[str, Any]:
        """Reference figures measured once at the start (JSON-ready, with "seconds"); see guards."""

    def carry(self) -> dict[str, torch.Tensor]:
        """Tensors last.safetensors keeps besides weights and optimiser (an LM: the carried state)."""

    def restore(self, tensors: dict[str, torch.Tensor], keep_carry: bool) -> None:
        """A resume: take back what `carry` stored (unless `keep_carry` is False: start it afresh)."""

    def describe(self) -> dict[str, Any]:
        """The task's part of the start-up information (shown by the CLI); "warnings": what to tell first."""

    def summary(self) -> dict[str, Any]:
        """The task's part of the end summary (an LM: its vocabulary size and level)."""


@dataclass
class OpenedTask:
    """A task ready to run, and what was settled on the way: the options as chosen, the precision."""

    task: Task
    config: TrainConfig
    amp_dtype: torch.dtype | None
    chosen: str = ""  # what charlm chose for options the user left open, and why (shown at the start)
    seconds: float = 0.0  # spent choosing (measuring speeds): charged to the run's budget


# open_task(config, dctx, device, progress, info): info is the resumed run's checkpoint, None for a new run.
TaskOpener = Callable[[TrainConfig, DistContext, torch.device, Any, "CheckpointInfo | None"], OpenedTask]
