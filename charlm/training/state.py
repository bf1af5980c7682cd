"""A run's counters and how it ended: `RunState` (resumed from last.safetensors), `TrainResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from charlm.training.config import TrainConfig

# Why a run ended: TrainResult.status, the summary's "stopped by".
STATUSES = {
    "max steps": "the run reached --max-steps",
    "epochs": "the run made --epochs passes over the training data",
    "time budget": "the run spent its --time-budget (validation and save time reserved)",
    "early stop": "--patience validations in a row did not improve on the best",
    "overfitting": "validation stayed well above its best for many validations (charlm.training.guards)",
    "interrupted": "SIGINT, SIGTERM or SIGHUP (or a caller's stop_after): saved, resumable",
    "estimated": "a model estimated in one pass (Kneser-Ney): no steps, nothing to resume",
}


@dataclass
class RunState:
    """The counters of a run: everything besides tensors that a resume restores (last.safetensors' metadata)."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # where the next batch starts in the current epoch, in the task's units (an LM: a column)
    elapsed: float = 0.0  # seconds of training so far, all sessions together
    tokens: int = 0  # what the losses were means over (an LM: tokens), all sessions together
    best_valid: float | None = None
    last_valid: float | None = None
    last_eval_step: int | None = None
    bad_evals: int = 0  # validations without improvement (early stopping)
    plateau_bad: int = 0
    plateau_scale: float = 1.0
    fingerprint: str = ""  # the training text's
    valid_fingerprint: str = ""  # the validation text's
    precision: str = ""  # what the run trains in (fp32, bf16, fp16): a resume under --precision auto keeps it
    best_step: int | None = None  # the step of the best validation (the `best` checkpoint's)
    evals: int = 0  # validations so far
    baselines: dict[str, Any] | None = None  # the task's baselines record: measured once, kept for a resume

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        """From a checkpoint's trainer metadata; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def record_validation(state: RunState, loss: float, config: TrainConfig) -> tuple[bool, bool]:
    """Update best, early-stopping and plateau counters for one validation: (improved, stop early)."""
    state.last_valid, state.evals = loss, state.evals + 1
    improved = state.best_valid is None or loss < state.best_valid
    if improved:
        state.best_valid, state.best_step, state.bad_evals, state.plateau_bad = loss, state.step, 0, 0
    else:
        state.bad_evals += 1
        state.plateau_bad += 1
        if config.optim.schedule == "plateau" and state.plateau_bad > config.optim.plateau_patience:
            state.plateau_scale *= config.optim.plateau_factor
            state.plateau_bad = 0
    return improved, config.run.patience is not None and state.bad_evals >= config.run.patience


@dataclass
class TrainResult:
    """How a run ended and where it left its checkpoint."""

    out: Path
    status: str  # one of STATUSES
    step: int
    epoch: int
    best_valid_loss: float | None
    last_valid_loss: float | None
    train_loss: float | None
    elapsed: float
    tokens_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)  # this session's train and valid records
    resumed_from: int | None = None  # the step a resumed run started at
    signal: str | None = None  # SIGINT, SIGTERM or SIGHUP when one stopped the run
    best_step: int | None = None
    baselines: dict[str, Any] | None = None  # charlm.training.baselines.compute's record, None when turned off
    notes: list[str] = field(default_factory=list)  # what the user should hear at the end (worse than KN)
    vocab_size: int | None = None  # the tokenizer's
