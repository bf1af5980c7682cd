"""The library face: load a checkpoint once and generate, stream, score and measure perplexity from Python,
or train a model; what the `charlm` commands do, as functions that return data.

    lm = load("checkpoints/tinyshakespeare")
    lm.generate("ROMEO:", max_new_tokens=200, seed=1).text
    lm.perplexity("held-out.txt").bits_per_char
    lm.score("To be, or not to be").logprob
    train("corpora/tinyshakespeare.txt", time_budget=60.0)
    clf = load("checkpoints/reviews")                   # a classify run's checkpoint: a `Classifier`
    clf.classify(["a gorgeous, witty film"])[0].label; clf.evaluate("dev.tsv").macro_f1

Other rooms (the CLI) import from here, not from the modules inside.
"""

from charlm.api.keywords import DecodingKeywords, GenerateKeywords, random_seed
from charlm.api.many import MAX_BATCH, Request
from charlm.api.model import TASK_LOADERS, LanguageModel, load, load_language_model
from charlm.api.results import Completions, Stream, TokenScores
from charlm.api.training import train
from charlm.classify import Classifier, Prediction, Report
from charlm.evaluation import TextScore
from charlm.sampling import DecodingOptions, Generation, Prompt
from charlm.training import TrainResult

__all__ = [
    "MAX_BATCH",
    "TASK_LOADERS",
    "Classifier",
    "Prediction",
    "Report",
    "load_language_model",
    "Completions",
    "DecodingKeywords",
    "DecodingOptions",
    "GenerateKeywords",
    "Generation",
    "LanguageModel",
    "Prompt",
    "Request",
    "Stream",
    "TextScore",
    "TokenScores",
    "TrainResult",
    "load",
    "load_language_model",
    "random_seed",
    "train",
]
