"""When a run stops and how fast it learns on the way: `Limits` and the learning-rate factor."""

from __future__ import annotations

import math
from dataclasses import dataclass

from charlm.training.config import TrainConfig
from charlm.training.state import RunState

# The default warm-up: this share of the run (by its first limit).
WARMUP_FRACTION = 0.02


def lr_factor(config: TrainConfig, step: int, progress: float, plateau_scale: float) -> float:
    """Multiplier of the base learning rate: linear warm-up, then the chosen decay.

    progress in [0, 1] is how far the run is towards its first limit (steps,
    epochs or time budget); cosine and linear decay to min_lr_ratio at 1. The
    warm-up is `warmup_steps` long, or (None) WARMUP_FRACTION of the run, so a
    one-minute run on a slow CPU does not spend itself warming up.
    """
    if config.optim.warmup_steps is None:  # follows the run: from a tenth of the peak, at the peak 2% of the way in
        warm = min(1.0, 0.1 + 0.9 * progress / WARMUP_FRACTION)
    else:
        warm = min(1.0, (step + 1) / config.optim.warmup_steps) if config.optim.warmup_steps else 1.0
    p = min(max(progress, 0.0), 1.0)
    lo = config.optim.min_lr_ratio
    if config.optim.schedule == "cosine":
        decay = lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * p))
    elif config.optim.schedule == "linear":
        decay = lo + (1 - lo) * (1 - p)
    elif config.optim.schedule == "plateau":
        decay = plateau_scale
    else:
        decay = 1.0
    return warm * decay


@dataclass(frozen=True)
class Limits:
    """When a run stops: steps, passes over the data, or seconds, whichever comes first."""

    epochs: float | None
    max_steps: int | None
    time_budget: float | None
    columns: int  # the task's units per epoch (an LM: targets per row): an epoch ends when `pos` reaches it

    def progress(self, state: RunState, seconds: float) -> float:
        """How far the run is towards its first limit, in [0, 1] (what the learning-rate decay follows)."""
        p = 0.0
        if self.max_steps:
            p = max(p, state.step / self.max_steps)
        if self.epochs:
            p = max(p, (state.epoch + state.pos / self.columns) / self.epochs)
        if self.time_budget:
            p = max(p, seconds / self.time_budget)
        return min(p, 1.0)

    def reached(self, state: RunState) -> str | None:
        """The count limit the run has reached (steps or epochs), or None; time is checked separately."""
        if self.max_steps is not None and state.step >= self.max_steps:
            return "max steps"
        if self.epochs is not None and state.epoch + state.pos / self.columns >= self.epochs:
            return "epochs"
        return None

    def out_of_time(self, seconds: float) -> bool:
        return self.time_budget is not None and seconds >= self.time_budget
