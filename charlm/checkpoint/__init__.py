"""Checkpoint directories: their layout, the tensors in them, safe writing, and loading for inference or resuming.

    layout    file names, where each file is now (`locate`), whether a directory holds a run
    tensors   digests, reading safetensors back checked, model and optimiser states as tensors
    loading   checkpoint.json, the tokenizer and the model, for inference or a resume
    store     a run's saves: signed tensor files, the run writer and its swap-in transaction, metrics, and
              reading back the training state a resume needs

Other rooms import from here, not from the modules inside.
"""

from charlm.checkpoint.layout import ARPA, BEST, LAST, META_FILE, METRICS, holds_run, is_checkpoint_dir, locate
from charlm.checkpoint.loading import (
    CheckpointInfo,
    load_for_inference,
    open_checkpoint,
    open_tokenizer,
    tokenizer_fingerprint,
)
from charlm.checkpoint.store import (
    RunWriter,
    append_metrics,
    load_training_state,
    read_metrics,
    truncate_metrics,
    weights_metadata,
    write_inference_checkpoint,
)
from charlm.checkpoint.tensors import load_model_tensors, load_tensors, optimizer_from_flat

__all__ = [
    "ARPA",
    "BEST",
    "LAST",
    "META_FILE",
    "METRICS",
    "CheckpointInfo",
    "RunWriter",
    "append_metrics",
    "holds_run",
    "is_checkpoint_dir",
    "load_for_inference",
    "load_model_tensors",
    "load_tensors",
    "load_training_state",
    "locate",
    "open_checkpoint",
    "open_tokenizer",
    "optimizer_from_flat",
    "read_metrics",
    "tokenizer_fingerprint",
    "truncate_metrics",
    "weights_metadata",
    "write_inference_checkpoint",
]
