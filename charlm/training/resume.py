"""Continuing a run from last.safetensors: weights, optimiser, random state, scaler, the task's carry, counters.

Everything is checked before it is trusted: a last.safetensors without the training
state, or with an unusable one, is refused as corrupt; a different training text is
refused; a different validation text restarts the choice of best.
"""

from __future__ import annotations

from typing import Any

import torch

from charlm.checkpoint import CheckpointInfo
from charlm.checkpoint import store as ckpt
from charlm.errors import CheckpointError
from charlm.training.state import RunState
from charlm.training.task import Task


def restore_run(
    info: CheckpointInfo,
    task: Task,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    keep_carry: bool,
) -> RunState:
    """Load the run's last state into the task's model, the optimiser, the scaler and the RNGs: its counters."""
    out = info.path
    tensors, saved = ckpt.load_training_state(out)
    if "rng/cpu" not in tensors or not isinstance(saved.get("trainer"), dict):
        raise CheckpointError(f"{out / ckpt.LAST} lacks the training state a resume needs; the checkpoint is corrupt")
    if saved["trainer"].get("fingerprint") != task.fingerprint:
        raise CheckpointError(
            f"the training text differs from the one {out} was trained on; "
            "resume with the same corpus or start a new run"
        )
    model: Any = task.model  # the checkpoint code types it as the recurrent model's today
    ckpt.load_model_tensors(model, tensors, out / ckpt.LAST)
    try:  # the optimiser's tensors go where load_state_dict puts them (AdamW keeps `step` on the CPU)
        ckpt.optimizer_from_flat(optimizer, tensors, saved["optimizer"])
        torch.set_rng_state(tensors["rng/cpu"])
        if scaler is not None and saved["trainer"].get("scaler"):
            scaler.load_state_dict(saved["trainer"]["scaler"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"{out / ckpt.LAST} has an unusable optimiser or RNG state ({type(exc).__name__}); "
            "the checkpoint is corrupt"
        ) from None
    if device.type == "cuda" and "rng/cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng/cuda"], device)
    task.restore(tensors, keep_carry)
    return RunState.from_dict(saved["trainer"])


def reconcile_best(s: RunState, best_meta: dict[str, Any] | None, valid_fingerprint: str) -> list[str]:
    """A kill between writing best and last leaves best ahead of last's record: trust the lower loss.

    If the validation text changed, losses are not comparable: best is chosen again (the notes say so).
    """
    notes = []
    if s.valid_fingerprint and s.valid_fingerprint != valid_fingerprint:
        s.best_valid, s.last_valid, s.bad_evals, s.plateau_bad = None, None, 0, 0
        s.best_step, s.baselines = None, None  # the baselines are scored again on the new text
        notes.append("the validation text differs from the run's: best is chosen again from the next validation on it")
    elif best_meta and best_meta.get("valid_fingerprint") == s.valid_fingerprint:
        kept = best_meta.get("valid_loss")
        if kept is not None and (s.best_valid is None or kept < s.best_valid):
            s.best_valid, s.best_step = kept, best_meta.get("step", s.best_step)
    s.valid_fingerprint = valid_fingerprint
    return notes
