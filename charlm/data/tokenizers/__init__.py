"""Text <-> token ids: one interface, three kinds, always fitted on training text only.

    char     <unk> (id 0) + the sorted distinct characters of the fitted text.
             Unseen characters encode to <unk>, which decodes to U+FFFD.
    word     <unk> (id 0) and <eos> (id 1) + words, most frequent first (ties in
             code-point order). <eos> is a line end (PTB convention): "\\n" encodes
             to <eos> and <eos> decodes to "\\n"; the words of a line are joined
             by single spaces. Literal "<unk>" / "<eos>" tokens in the text map to
             those ids, so pre-tokenized corpora (WikiText, PTB) keep their <unk>;
             <unk> decodes to "<unk>" (and a literal "<eos>" comes back as "\\n").
    subword  SentencePiece (unigram by default, or bpe; 1000 pieces by default)
             trained in memory, lossless for any Unicode text: identity
             normalisation, no whitespace folding, byte fallback for unseen
             characters, "\\n" as its own piece. id 0 is <unk>, which byte
             fallback makes unreachable from text (it would decode to U+FFFD).

`encode_array` is the vectorised path for whole corpora (no Python step per
token; `encode` is the plain reference it equals); it returns the smallest
unsigned dtype that holds every id (`id_dtype`), and `encode_with_oov` also counts
the tokens outside the vocabulary. `fit_tokenizer_stream` fits any kind on a
stream of text chunks in one pass whose memory is bounded by the chunk size and
the vocabulary, never by the corpus, and gives the same tokenizer as fitting on
the joined text (`fit_tokenizer`); `token_safe_pieces` cuts a stream where no
token spans a cut. A subword text encoded in pieces can differ from the whole
text's encoding where two segmentations score the same to within rounding (both
decode to the text). Tokenizers are plain data:
`to_dict`/`tokenizer_from_dict` and `save`/`load_tokenizer` (JSON, plus the
SentencePiece model's own bytes in tokenizer.model); nothing is pickled.

Modules: `base` (the interface, file names, id checks), `char`, `word` (with
`punct`, its pre-tokenizer; `wordscan` and `wordtable`, its vectorised path),
`subword`, `pieces` (token-safe cuts, the line-start token) and `kinds` (fit,
rebuild or load any kind by name). Other modules import from here.
"""

from charlm.data.tokenizers.base import (
    EOS,
    FORMAT,
    SUBWORD_MODEL_FILE,
    TOKENIZER_FILE,
    UNK,
    Tokenizer,
    id_dtype,
)
from charlm.data.tokenizers.char import CharTokenizer
from charlm.data.tokenizers.kinds import (
    KINDS,
    fit_tokenizer,
    fit_tokenizer_stream,
    load_tokenizer,
    tokenizer_from_dict,
)
from charlm.data.tokenizers.pieces import line_start_id, token_safe_pieces
from charlm.data.tokenizers.punct import PUNCT_RE
from charlm.data.tokenizers.subword import MAX_SUBWORD_TRAIN_CHARS, SubwordTokenizer
from charlm.data.tokenizers.word import WordTokenizer

__all__ = [
    "PUNCT_RE",
    "EOS",
    "FORMAT",
    "KINDS",
    "MAX_SUBWORD_TRAIN_CHARS",
    "SUBWORD_MODEL_FILE",
    "TOKENIZER_FILE",
    "UNK",
    "CharTokenizer",
    "SubwordTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "fit_tokenizer",
    "fit_tokenizer_stream",
    "id_dtype",
    "line_start_id",
    "load_tokenizer",
    "token_safe_pieces",
    "tokenizer_from_dict",
]
