"""Checkpoint directories: their layout, safe writing, and loading for inference or resuming.

Other rooms import from here, not from the modules inside.
"""

from charlm.checkpoint.store import (
    CheckpointInfo,
    load_for_inference,
    open_checkpoint,
    read_metrics,
    tokenizer_fingerprint,
)

__all__ = ["CheckpointInfo", "load_for_inference", "open_checkpoint", "read_metrics", "tokenizer_fingerprint"]
