"""Training runs: configuration, autosize, the trainer, the n-gram estimator, baselines, memory, plots.

Other rooms import from here, not from the modules inside.
"""

from charlm.training.config import (
    ENCODING_ERRORS,
    LEVELS,
    MAX_SEED,
    MODEL_KINDS,
    OPTIMIZERS,
    PRETOKENIZERS,
    SCHEDULES,
    SUBWORD_MODELS,
    TrainConfig,
    check_ngram_options,
    resumed_config,
)
from charlm.training.ngram_task import train_ngram
from charlm.training.plot import DEFAULT_HEIGHT, load_curves, render_terminal, write_png
from charlm.training.trainer import TrainResult, prepare_data, train

__all__ = [
    "DEFAULT_HEIGHT",
    "ENCODING_ERRORS",
    "LEVELS",
    "MAX_SEED",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "PRETOKENIZERS",
    "SCHEDULES",
    "SUBWORD_MODELS",
    "TrainConfig",
    "TrainResult",
    "check_ngram_options",
    "load_curves",
    "prepare_data",
    "render_terminal",
    "resumed_config",
    "train",
    "train_ngram",
    "write_png",
]
