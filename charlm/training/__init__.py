"""Training runs: configuration, autosize, the loop and its tasks (language model, n-gram), baselines, memory, plots.

    train(config)   the way in, for every task (charlm.training.run)
    TrainConfig     a run's options in sections (data, tokenizer, model, optim, run, task: charlm.training.sections),
                    built and changed by flat option names (`TrainConfig.from_options`, `config.replace`)
    loop            what every run trained by steps shares; task: what a kind of training brings to it
    tasks/          the language model (truncated BPTT) and the Kneser-Ney n-gram estimator

Other rooms import from here, not from the modules inside.
"""

from charlm.training.config import (
    DEFAULT_TIME_BUDGET,
    DEFAULTS,
    ENCODING_ERRORS,
    LEVELS,
    LIMITS,
    MAX_SEED,
    MODEL_KINDS,
    OPTIMIZERS,
    OPTIONS,
    PRETOKENIZERS,
    RESUMABLE,
    SCHEDULES,
    SECTIONS,
    SUBWORD_MODELS,
    TAG_COLUMNS,
    TAG_SCHEMES,
    TrainConfig,
    check_ngram_options,
    flat_options,
    resumed_config,
)
from charlm.training.observer import SilentObserver, TrainObserver
from charlm.training.plot import DEFAULT_HEIGHT, load_curves, render_terminal, write_png
from charlm.training.prepare import PreparedData, prepare_data
from charlm.training.run import new_run, resume_run, train
from charlm.training.sections import DataOptions, ModelOptions, OptimOptions, RunOptions, TaskOptions, TokenizerOptions
from charlm.training.state import STATUSES, RunState, TrainResult
from charlm.training.task import Batch, OpenedTask, Task
from charlm.training.tasks.ngram import train_ngram

__all__ = [
    "DEFAULTS",
    "DEFAULT_HEIGHT",
    "DEFAULT_TIME_BUDGET",
    "ENCODING_ERRORS",
    "LEVELS",
    "LIMITS",
    "MAX_SEED",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "OPTIONS",
    "PRETOKENIZERS",
    "RESUMABLE",
    "SCHEDULES",
    "SECTIONS",
    "STATUSES",
    "SUBWORD_MODELS",
    "TAG_COLUMNS",
    "TAG_SCHEMES",
    "Batch",
    "DataOptions",
    "ModelOptions",
    "OptimOptions",
    "RunOptions",
    "TaskOptions",
    "TokenizerOptions",
    "OpenedTask",
    "PreparedData",
    "RunState",
    "SilentObserver",
    "Task",
    "TrainConfig",
    "TrainObserver",
    "TrainResult",
    "check_ngram_options",
    "flat_options",
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
