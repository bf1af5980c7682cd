"""The kinds of model charlm knows, by the name checkpoint.json records as "model_kind"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from charlm.errors import ConfigError
from charlm.models.classifier import ClassifierConfig
from charlm.models.ngram import KneserNeyConfig
from charlm.models.protocol import LMConfig
from charlm.models.rnn import ModelConfig
from charlm.models.tagger import TaggerConfig

# a recurrent network, an interpolated modified Kneser-Ney n-gram model, or the model of a task of its own (a
# sequence tagger, a text classifier: not language models; checkpoint.json says so with "task"): each kind's
# options from their dict
_CONFIGS: dict[str, Callable[[Any], Any]] = {
    "rnn": ModelConfig.from_dict,
    "kn": KneserNeyConfig.from_dict,
    "tag": TaggerConfig.from_dict,
    "classify": ClassifierConfig.from_dict,
}
MODEL_KINDS = tuple(_CONFIGS)


def config_from_dict(kind: str, d: Any) -> LMConfig:
    """The options of a model of `kind` from their stored dict (checkpoint.json's "model").

    ConfigError for an unknown kind or options; a dict of the wrong shape may raise TypeError or KeyError.
    """
    if kind not in _CONFIGS:
        raise ConfigError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    return _CONFIGS[kind](d)
