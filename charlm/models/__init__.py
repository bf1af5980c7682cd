"""The models: the protocol every model satisfies, the recurrent language model (its dropouts and adaptive
softmax), the Kneser-Ney n-gram model and its ARPA files, a tagger's options, and the text classifier (a
recurrent encoder and a head).

Other rooms import from here, not from the modules inside.
"""

from charlm.models.arpa import token_names
from charlm.models.classifier import (
    ENCODERS,
    POOLINGS,
    ClassifierConfig,
    ClassifierInput,
    TextClassifier,
    pooling_parts,
    reader_tensors,
)
from charlm.models.kinds import MODEL_KINDS, config_from_dict
from charlm.models.ngram import KneserNeyConfig, KneserNeyModel
from charlm.models.protocol import LanguageModel, LMConfig, LMOutput, State, detach_state, reorder_state
from charlm.models.rnn import CELLS, LOGIT_BUDGET, ModelConfig, RNNLanguageModel
from charlm.models.tagger import TaggerConfig

__all__ = [
    "ENCODERS",
    "POOLINGS",
    "ClassifierConfig",
    "ClassifierInput",
    "TextClassifier",
    "CELLS",
    "LMConfig",
    "LMOutput",
    "KneserNeyConfig",
    "KneserNeyModel",
    "LOGIT_BUDGET",
    "LanguageModel",
    "MODEL_KINDS",
    "ModelConfig",
    "RNNLanguageModel",
    "State",
    "TaggerConfig",
    "config_from_dict",
    "detach_state",
    "pooling_parts",
    "reader_tensors",
    "reorder_state",
    "token_names",
]
