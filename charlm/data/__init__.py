"""Reading corpora, tokenizers, the token cache and batching: what turns files into token ids.

Other rooms import from here, not from the modules inside.
"""

from charlm.data.batching import batchify, epoch_offset, get_batch, num_windows, window_length
from charlm.data.corpus import iter_text_chunks, normalise_newlines
from charlm.data.textbytes import decode_text
from charlm.data.tokcache import TokenizedCorpus, default_cache_dir, shard, tokenized_corpus
from charlm.data.tokenizers import PUNCT_RE, Tokenizer, fit_tokenizer, line_start_id, load_tokenizer, token_safe_pieces

__all__ = [
    "PUNCT_RE",
    "TokenizedCorpus",
    "Tokenizer",
    "batchify",
    "default_cache_dir",
    "epoch_offset",
    "fit_tokenizer",
    "get_batch",
    "iter_text_chunks",
    "line_start_id",
    "load_tokenizer",
    "normalise_newlines",
    "decode_text",
    "num_windows",
    "shard",
    "token_safe_pieces",
    "tokenized_corpus",
    "window_length",
]
