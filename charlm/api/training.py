"""`charlm.train(corpus, **options)`: a training run from Python, as `charlm train` starts one but quiet."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from charlm.api.keywords import check_names
from charlm.training import OPTIONS, TrainConfig, TrainResult
from charlm.training import train as run_training

PathLike = str | os.PathLike[str]
_OPTIONS = frozenset(OPTIONS) - {"corpus"}


def train(
    corpus: PathLike | Sequence[PathLike],
    *,
    resume: bool = False,
    overwrite: bool = False,
    observer: Any = None,
    **options: Any,
) -> TrainResult:
    """Train a model on `corpus` (a text file or directory, or a list of them) and return how the run ended.

    `options` are `charlm.training.TrainConfig`'s options by their flat names (hidden_size=256, max_steps=500,
    time_budget=60.0 in seconds, out="checkpoints/x", level="word", model="kn", ...); what is left out is
    chosen as `charlm train` chooses it. The run prints nothing unless `observer` (a
    `charlm.training` observer) reports it. resume=True goes on with the run in `out`; overwrite=True
    replaces a run there. A misspelt or out-of-range option is a one-line `ConfigError`.
    """
    check_names(options, _OPTIONS, "training")
    options = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}  # out, cache_dir
    if "valid" in options:
        options["valid"] = _paths(options["valid"])
    config = TrainConfig.from_options(corpus=_paths(corpus), **options)
    return run_training(config, resume=resume, overwrite=overwrite, observer=observer)


def _paths(value: PathLike | Sequence[PathLike] | None) -> tuple[str, ...]:
    """One path or several, as the strings TrainConfig stores."""
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        return (os.fspath(value),)
    return tuple(os.fspath(p) for p in value)
