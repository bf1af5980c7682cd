"""The models: the recurrent language model, its dropouts and adaptive softmax, the Kneser-Ney n-gram model.

Other rooms import from here, not from the modules inside.
"""

from charlm.models.ngram import KneserNeyConfig, KneserNeyModel, token_names
from charlm.models.protocol import LMOutput, State
from charlm.models.rnn import CELLS, LOGIT_BUDGET, ModelConfig, RNNLanguageModel, detach_state, reorder_state

__all__ = [
    "LMOutput",
    "CELLS",
    "KneserNeyConfig",
    "KneserNeyModel",
    "LOGIT_BUDGET",
    "ModelConfig",
    "RNNLanguageModel",
    "State",
    "detach_state",
    "reorder_state",
    "token_names",
]
