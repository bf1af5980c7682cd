"""Scoring text with a model: perplexity, mixtures, dynamic evaluation and their side-by-side reports.

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
from charlm.evaluation.lines import score_lines
from charlm.evaluation.metrics import TextScore, total
from charlm.evaluation.mixture import choose_weight, evaluate_file_mixture
from charlm.evaluation.report import (
    FileScores,
    Report,
    Source,
    dynamic_report,
    dynamic_statistics,
    mixture_report,
    mixture_weight,
    perplexity_report,
)
from charlm.evaluation.scoring import context_id, evaluate_file, evaluate_ids, evaluate_text
from charlm.evaluation.streams import (
    DEFAULT_SEGMENT,
    DEFAULT_STREAMS,
    DEFAULT_WARMUP,
    DEFAULT_WINDOW,
    Scoring,
    model_device,
    score_stream,
    stream_logprobs,
)

__all__ = [
    "DYNAMIC_LR",
    "DEFAULT_SEGMENT",
    "DEFAULT_STREAMS",
    "DEFAULT_WARMUP",
    "DEFAULT_WINDOW",
    "DYNAMIC_SEGMENT",
    "DynamicOptions",
    "FileScores",
    "RMS_DECAY",
    "RMS_LR",
    "RMS_TOKENS",
    "RULES",
    "Report",
    "Scoring",
    "Source",
    "TextScore",
    "choose_weight",
    "context_id",
    "dynamic_report",
    "dynamic_statistics",
    "evaluate_file",
    "evaluate_file_dynamic",
    "evaluate_file_mixture",
    "evaluate_ids",
    "evaluate_text",
    "gradient_rms",
    "mixture_report",
    "mixture_weight",
    "model_device",
    "perplexity_report",
    "score_lines",
    "score_stream",
    "stream_logprobs",
    "total",
]
