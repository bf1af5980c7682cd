"""Training runs: configuration, autosize, the loop and its tasks (language model, n-gram), baselines, memory, plots.

    train(config)   the way in, for every task (charlm.training.run)
    loop            what every run trained by steps shares; task: what a kind of training brings to it
    tasks/          the language model (truncated BPTT) and the Kneser-Ney n-gram estimator

Other rooms import from here, not from the modules inside.
"""

from charlm.training.config import (
    DEFAULT_TIME_BUDGET,
    ENCODING_ERRORS,
    LEVELS,
    LIMITS,
    MAX_SEED,
    MODEL_KINDS,
    OPTIMIZERS,
    PRETOKENIZERS,
    RESUMABLE,
    SCHEDULES,
    SUBWORD_MODELS,
    TrainConfig,
    check_ngram_options,
    resumed_config,
)
from charlm.training.observer import SilentObserver, TrainObserver
from charlm.training.plot import DEFAULT_HEIGHT, load_curves, render_terminal, write_png
from charlm.training.prepare import PreparedData, prepare_data
from charlm.training.run import new_run, resume_run, train
from charlm.training.state import STATUSES, RunState, TrainResult
from charlm.training.task import Batch, OpenedTask, Task
from charlm.training.tasks.ngram import train_ngram

__all__ = [
    "DEFAULT_HEIGHT",
    "DEFAULT_TIME_BUDGET",
    "ENCODING_ERRORS",
    "LEVELS",
    "LIMITS",
    "MAX_SEED",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "PRETOKENIZERS",
    "RESUMABLE",
    "SCHEDULES",
    "STATUSES",
    "SUBWORD_MODELS",
    "Batch",
    "OpenedTask",
    "PreparedData",
    "RunState",
    "SilentObserver",
    "Task",
    "TrainConfig",
    "TrainObserver",
    "TrainResult",
    "check_ngram_options",
    "load_curves",
    "new_run",
    "prepare_data",
    "render_terminal",
    "resume_run",
    "resumed_config",
    "train",
    "train_ngram",
    "write_png",
]
