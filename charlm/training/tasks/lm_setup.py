"""Opening a language-model run: its data, the checks that it fits, the options charlm chooses, the task.

A new run settles everything before anything is written (a refused option leaves
the directory as it was); a resumed one is opened under the directory's lock,
after `RunWriter` finished what a killed run left, and keeps the run's options
and precision.
"""

from __future__ import annotations

from typing import Any

import torch

from charlm.checkpoint import CheckpointInfo
from charlm.checkpoint import store as ckpt
from charlm.errors import ConfigError
from charlm.runtime import DistContext
from charlm.training import memory
from charlm.training.config import TrainConfig
from charlm.training.prepare import PreparedData, shared_data
from charlm.training.speed import choose
from charlm.training.task import OpenedTask
from charlm.training.tasks.lm import LMTask


def check_fits(config: TrainConfig, data: PreparedData, world: int = 1) -> None:
    """Refuse a training text too short for one window of every stream (of every process)."""
    assert config.task.batch_size is not None and config.task.bptt is not None
    need = world * config.task.batch_size * (config.task.bptt + 1)
    if len(data.train_ids) < need:
        raise ConfigError(
            f"the training text has {len(data.train_ids)} tokens, fewer than one window needs "
            f"(batch size {config.task.batch_size} x (bptt {config.task.bptt} + 1) = {need // world}"
            f"{f' per process, {world} processes' if world > 1 else ''}); "
            "use a longer corpus or smaller --batch-size/--bptt"
        )


def open_lm(
    config: TrainConfig, dctx: DistContext, device: torch.device, progress: Any, info: CheckpointInfo | None
) -> OpenedTask:
    """The run's data and options, then the task (its model built from the run's seed); `info`: a resumed run's."""
    if info is None:  # every option is known good before anything is written
        data = shared_data(config, dctx, device, None, progress)
        memory.check_training(config, data.tokenizer.vocab_size, device, dctx.world)  # autosize measures --hidden
        config, chosen, seconds, amp_dtype = choose(config, data, device, dctx)
        check_fits(config, data, dctx.world)
        memory.check_training(config, data.tokenizer.vocab_size, device, dctx.world)
    else:
        data = shared_data(config, dctx, device, ckpt.open_tokenizer(info), progress)
        stored = (ckpt.weights_metadata(info.path, "last") or {}).get("trainer")
        kept = str(stored.get("precision") or "fp32") if isinstance(stored, dict) else "fp32"
        config, chosen, seconds, amp_dtype = choose(config, data, device, dctx, kept)
    torch.manual_seed(config.run.seed)
    return OpenedTask(LMTask(config, data, device, amp_dtype, dctx), config, amp_dtype, chosen, seconds)
