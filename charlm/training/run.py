"""`train()`: from text files to a resumable checkpoint directory, for every task.

    train(config)
      ├─ an estimated task (--model kn)  its estimate(): one pass, one save
      ├─ new_run       check the directory, open the task (data, choices), then stage the run and write
      └─ resume_run    the run's own options; under the directory's lock open the task, restore its state
           └─ Loop.run()   steps, logs, validations and saves until a limit, a signal or a guard stops it

Repeatability: with the same seed, a CPU run whose schedule is driven by steps
or epochs gives the same losses every time, and a run stopped and resumed gives
the same losses as one that never stopped. A `time_budget` drives the learning
rate by elapsed wall-clock time, which is repeatable only as far as the
machine's speed is.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from typing import Any

import torch

from charlm.checkpoint import store as ckpt
from charlm.errors import ConfigError
from charlm.runtime import DistContext, resolve_device, resolve_precision
from charlm.training.config import TrainConfig, resumed_config
from charlm.training.loop import Loop
from charlm.training.observer import TrainObserver
from charlm.training.prepare import check_out_dir, check_resume_or_overwrite
from charlm.training.state import TrainResult
from charlm.training.task import TaskOpener
from charlm.training.tasks import ngram
from charlm.training.tasks.classify_setup import open_classify
from charlm.training.tasks.lm_setup import open_lm
from charlm.training.tasks.tag import open_tagger

# The tasks, by --model: those trained by the loop (`charlm.training.task.Task`), by their opener ...
TASKS: dict[str, TaskOpener] = {"rnn": open_lm, "tag": open_tagger, "classify": open_classify}
# ... and those estimated in one pass, without it.
ESTIMATORS: dict[str, Callable[[TrainConfig, bool, bool, Any], TrainResult]] = {"kn": ngram.estimate}

StopAfter = Callable[[int], bool] | None
Session = Callable[[torch.device], TrainResult]  # a run's work on its device, after the process group is set up


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    observer: TrainObserver | None = None,
    stop_after: StopAfter = None,
) -> TrainResult:
    """Train (or resume) a run and return how it ended.

    With resume=True the run keeps its stored options except those `config` sets
    to non-default values that a resume may change (`config.resumed_config`).
    `stop_after(step)` lets a caller stop the run as Ctrl-C would (tests use it).
    Raises `CharlmError` subclasses for bad input, `DivergedError` when the loss
    becomes non-finite or explodes (the checkpoint on disk is left as it was).
    """
    if config.model.kind in ESTIMATORS:  # counted, not trained: see charlm.training.tasks.ngram
        return ESTIMATORS[config.model.kind](config, resume, overwrite, observer)
    check_resume_or_overwrite(resume, overwrite)
    if resume:
        return resume_run(config, observer, stop_after)
    return new_run(config, overwrite, observer, stop_after)


def new_run(
    config: TrainConfig, overwrite: bool = False, observer: TrainObserver | None = None, stop_after: StopAfter = None
) -> TrainResult:
    """A new run: everything is read, checked and chosen before the directory changes (`RunWriter` stages it)."""
    dctx = DistContext.from_env()
    if dctx.is_main:  # in a torchrun job rank 0 alone checks and writes the directory
        check_out_dir(config.out_dir, resume=False, overwrite=overwrite)

    def session(device: torch.device) -> TrainResult:
        opened = TASKS[config.model.kind](config, dctx, device, _progress(observer, dctx), None)
        with _writer(config, dctx) as writer:  # every option is known good: now the directory changes
            loop = Loop(opened, device, dctx, writer, observer if dctx.is_main else None)
            loop.begin(opened.seconds)  # choosing the model is part of the budget
            return loop.run(stop_after)

    return _in_processes(config, dctx, session)


def resume_run(config: TrainConfig, observer: TrainObserver | None = None, stop_after: StopAfter = None) -> TrainResult:
    """A resumed run: its own options, with the changes `config` makes that a resume may; then its last state."""
    dctx = DistContext.from_env()
    if dctx.is_main:
        check_out_dir(config.out_dir, resume=True, overwrite=False)
    config = resumed_config(ckpt.open_checkpoint(config.out_dir).train_config, config.explicit_options())
    if config.model.kind in ESTIMATORS:
        raise ConfigError(ngram.NO_RESUME)

    def session(device: torch.device) -> TrainResult:
        with _writer(config, dctx) as writer:
            info = ckpt.open_checkpoint(config.out_dir)  # read under the lock, after RunWriter finished a killed run
            opened = TASKS[config.model.kind](config, dctx, device, _progress(observer, dctx), info)
            loop = Loop(opened, device, dctx, writer, observer if dctx.is_main else None)
            loop.restore(info)
            return loop.run(stop_after)

    return _in_processes(config, dctx, session)


def _progress(observer: TrainObserver | None, dctx: DistContext) -> Any:
    """What hears the tokenizing passes over a new corpus: the observer's `on_prepare`, on rank 0."""
    return getattr(observer, "on_prepare", None) if dctx.is_main else None


def _writer(config: TrainConfig, dctx: DistContext) -> contextlib.AbstractContextManager[ckpt.RunWriter | None]:
    """The run directory's one writer on rank 0; the other ranks of a torchrun job write nothing."""
    return ckpt.RunWriter(config.out_dir) if dctx.is_main else contextlib.nullcontext()


def _in_processes(config: TrainConfig, dctx: DistContext, session: Session) -> TrainResult:
    """Run `session` on the run's device, in the torchrun job's process group if any, and shut it down after."""
    device = resolve_device(config.run.device)
    resolve_precision(config.run.precision, device, config.model.cell)  # an impossible precision fails before any work
    device = dctx.setup(device)
    try:
        result = session(device)
    except BaseException as exc:
        if dctx.active:  # the traceback's frames hold the DDP wrapper, and so the process group: let them go
            traceback.clear_frames(exc.__traceback__)
        dctx.shutdown(clean=False)
        raise
    dctx.shutdown(clean=True)  # the session's frame, and with it the DDP wrapper, is gone by now
    return result
