"""Sequence labelling: reading labelled text, tag schemes, the BiLSTM(-CRF) tagger, metrics, tagging files.

    data      CoNLL-U and column files, raw text split into words (`Sentence`)
    schemes   BIO / IOB1 / BIOES: spans by conlleval's rules, conversion, checks, CRF constraints
    labels    a file's tags as the model trains on them (BIOES for spans)
    crf       the batched linear-chain CRF: forward algorithm, Viterbi, marginals, constraints
    metrics   token accuracy, entity precision/recall/F1 (micro and per type), the per-tag report
    vocab     the words, characters and tags of a tagger (its tokenizer.json)
    batch     sentences as padded tensors
    model     the tagger network (`Tagger`, `TaggerConfig`)
    predict   a tagger checkpoint loaded: tag sentences, evaluate a file, write the output formats

Other rooms import from here, not from the modules inside.
"""

from charlm.models import TaggerConfig
from charlm.tagging.batch import TagBatch, encode
from charlm.tagging.crf import CRF
from charlm.tagging.data import (
    FORMATS,
    Sentence,
    decode,
    read_columns,
    read_conllu,
    read_labelled,
    read_raw,
    sniff,
    split_words,
)
from charlm.tagging.labels import check_tags, from_internal, to_internal, training_tags
from charlm.tagging.metrics import TagScore, report, score
from charlm.tagging.model import Tagger
from charlm.tagging.predict import OUTPUT_FORMATS, SequenceTagger, TaggedSentence, load_tagger, write_tagged
from charlm.tagging.schemes import SCHEMES, constraints, convert, spans
from charlm.tagging.vocab import TagVocab

__all__ = [
    "CRF",
    "FORMATS",
    "OUTPUT_FORMATS",
    "SCHEMES",
    "Sentence",
    "SequenceTagger",
    "TagBatch",
    "TagScore",
    "TagVocab",
    "TaggedSentence",
    "Tagger",
    "TaggerConfig",
    "check_tags",
    "constraints",
    "convert",
    "decode",
    "encode",
    "from_internal",
    "load_tagger",
    "read_columns",
    "read_conllu",
    "read_labelled",
    "read_raw",
    "report",
    "score",
    "sniff",
    "spans",
    "split_words",
    "to_internal",
    "training_tags",
    "write_tagged",
]
