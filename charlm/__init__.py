"""charlm: train recurrent language models on your own text, generate text, measure perplexity.

    import charlm

    lm = charlm.load("checkpoints/tinyshakespeare")
    print(lm.generate("ROMEO:", max_new_tokens=200, seed=1).text)
    print(lm.perplexity("held-out.txt").bits_per_char)
    result = charlm.train("corpora/tinyshakespeare.txt", time_budget=60.0)

The names in `__all__` are the public API (README, "Library"); every module below is importable but
private by convention. `import charlm` stays cheap: torch and the rest load on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from charlm.errors import (
    CharlmError,
    CheckpointError,
    ConfigError,
    CorpusError,
    DivergedError,
    StorageError,
    TokenizerError,
)

__version__ = "0.1.0"

# Names served by charlm.api, imported on first use (it imports torch).
_API = (
    "Classifier",
    "Prediction",
    "Report",
    "Completions",
    "DecodingOptions",
    "Generation",
    "LanguageModel",
    "Stream",
    "TextScore",
    "TokenScores",
    "TrainResult",
    "load",
    "train",
)

if TYPE_CHECKING:
    from charlm.api import (
        Classifier,
        Completions,
        DecodingOptions,
        Generation,
        LanguageModel,
        Prediction,
        Report,
        Stream,
        TextScore,
        TokenScores,
        TrainResult,
        load,
        train,
    )

__all__ = [
    "CharlmError",
    "CheckpointError",
    "Classifier",
    "Completions",
    "ConfigError",
    "CorpusError",
    "DecodingOptions",
    "DivergedError",
    "Generation",
    "LanguageModel",
    "Prediction",
    "Report",
    "StorageError",
    "Stream",
    "TextScore",
    "TokenScores",
    "TokenizerError",
    "TrainResult",
    "__version__",
    "load",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module("charlm.api"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'charlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
