"""Text classification: labelled data in several formats, the classifier's vocabulary, metrics and their
picture, and a loaded classifier (`Classifier`: classify texts, evaluate a file).

    readers   TSV, CSV, JSON lines, fastText and plain lines -> `Example`s; errors name file and line
    vocab     words, characters, labels and language-model tokenizers -> batches (`ClassifierVocab`)
    options   a classify run's options (the training config's "classify" section)
    metrics   accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix (`Report`)
    figures   the confusion matrix as a PNG
    handle    `Classifier` and `load_classifier`

The network itself is `charlm.models.TextClassifier`; its training is `charlm.training.tasks.classify`.
Other rooms import from here, not from the modules inside.
"""

from charlm.classify import naive_bayes
from charlm.classify.figures import confusion_png, write_confusion_png
from charlm.classify.handle import Classifier, Prediction, load_classifier, predict_probabilities, score
from charlm.classify.metrics import ClassScore, Report, confusion_rows, multi_label_report, report, table_rows
from charlm.classify.options import CLASS_WEIGHTS, ClassifyOptions
from charlm.classify.readers import (
    FORMATS,
    INPUT_FORMATS,
    Columns,
    Example,
    guess_format,
    parse_examples,
    read_examples,
)
from charlm.classify.vocab import ClassifierVocab, words_of

__all__ = [
    "CLASS_WEIGHTS",
    "ClassScore",
    "Classifier",
    "ClassifierVocab",
    "ClassifyOptions",
    "Columns",
    "Example",
    "FORMATS",
    "INPUT_FORMATS",
    "Prediction",
    "Report",
    "confusion_png",
    "confusion_rows",
    "guess_format",
    "load_classifier",
    "multi_label_report",
    "naive_bayes",
    "parse_examples",
    "predict_probabilities",
    "read_examples",
    "report",
    "score",
    "table_rows",
    "words_of",
    "write_confusion_png",
]
