"""Scoring text with a model: perplexity, mixtures and dynamic evaluation.

Other rooms import from here, not from the modules inside.
"""

from charlm.evaluation.dynamic import (
    DYNAMIC_LR,
    DYNAMIC_SEGMENT,
    RMS_DECAY,
    RMS_LR,
    RMS_TOKENS,
    RULES,
    DynamicOptions,
    evaluate_file_dynamic,
    gradient_rms,
)
from charlm.evaluation.scoring import (
    DEFAULT_SEGMENT,
    DEFAULT_STREAMS,
    DEFAULT_WARMUP,
    DEFAULT_WINDOW,
    TextScore,
    choose_weight,
    context_id,
    evaluate_file,
    evaluate_file_mixture,
    evaluate_ids,
    evaluate_text,
    model_device,
    stream_logprobs,
    total,
)

__all__ = [
    "DEFAULT_SEGMENT",
    "DYNAMIC_LR",
    "DYNAMIC_SEGMENT",
    "DEFAULT_STREAMS",
    "DEFAULT_WARMUP",
    "DEFAULT_WINDOW",
    "DynamicOptions",
    "RMS_DECAY",
    "RMS_LR",
    "RMS_TOKENS",
    "RULES",
    "TextScore",
    "choose_weight",
    "context_id",
    "evaluate_file",
    "evaluate_file_dynamic",
    "evaluate_file_mixture",
    "evaluate_ids",
    "evaluate_text",
    "gradient_rms",
    "model_device",
    "stream_logprobs",
    "total",
]
