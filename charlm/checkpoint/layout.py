"""Checkpoint directories: what one holds, and where each of its files is now.

    DIR/
      checkpoint.json     format name and version, charlm version, run id, model
                          options, training options, tokenizer fingerprint (JSON)
      tokenizer.json      the fitted tokenizer (+ tokenizer.model for subwords)
      model.arpa.gz       a Kneser-Ney run's model (ARPA, gzip) instead of best/last
      best.safetensors    weights with the lowest validation loss so far
      last.safetensors    weights + optimiser + RNG + carried TBPTT state of the
                          newest save; the trainer's counters in its metadata
      metrics.jsonl       one JSON record per log line and per validation
      .lock               held (flock) by the process training into DIR

Everything is data: weights and optimiser tensors are safetensors, n-gram models
ARPA text, the rest is JSON. Nothing is unpickled on load, so a file crafted to
run code is refused as corrupt. checkpoint.json names the model kind
(`"model_kind"`: one of `charlm.models.MODEL_KINDS`; absent means "rnn", as older charlm wrote it).

While a new run is swapped in (`charlm.checkpoint.store`), DIR/.swap.json records
which files move from DIR/.staging; readers resolve each file through it (`locate`).
"""

from __future__ import annotations

import json
from pathlib import Path

from charlm.errors import CheckpointError

FORMAT = "charlm-checkpoint"
FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.jsonl"
PLOT = "loss.png"
ARPA = "model.arpa.gz"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
RUN_FILES = (META_FILE, *TOKENIZER_FILES, BEST, LAST, ARPA, METRICS, PLOT)  # what a run owns in its directory
STAGING = ".staging"
SWAP = ".swap.json"


def locate(directory: str | Path, name: str) -> Path:
    """Where a run file of `directory` is now: DIR/name, or DIR/.staging/name while a committed swap moves it.

    During a swap every file of the new run is read from wherever it is at that
    moment, and a file of the old run that the new one lacks counts as gone, so a
    reader never mixes the two runs.
    """
    directory = Path(directory)
    plan = swap_plan(directory)
    if plan is not None and name in RUN_FILES:
        staged = directory / STAGING / name
        if name in plan["move"] and staged.exists():
            return staged
        if name in plan["remove"]:
            return staged  # does not exist: the old run's file is no longer part of the directory
    return directory / name


def swap_plan(directory: Path) -> dict[str, list[str]] | None:
    try:
        plan = json.loads((directory / SWAP).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise CheckpointError(f"{directory / SWAP} is unreadable; the checkpoint is corrupt") from None
    if not isinstance(plan, dict) or not all(isinstance(plan.get(k), list) for k in ("move", "remove")):
        raise CheckpointError(f"{directory / SWAP} is not a charlm swap record; the checkpoint is corrupt")
    return plan


def is_checkpoint_dir(path: str | Path) -> bool:
    return locate(Path(path), META_FILE).is_file()


def holds_run(path: str | Path) -> bool:
    """True when `path` holds (part of) a run that a new run would replace."""
    return any(locate(Path(path), name).exists() for name in (META_FILE, BEST, LAST))
