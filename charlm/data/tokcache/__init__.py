"""Tokenized corpora on disk: ids written once, streaming, then read through a memory map.

A trainer calls `tokenized_corpus(...)` and gets the training and validation ids as
read-only `np.memmap`s in the smallest unsigned dtype the vocabulary allows (1 byte
per character for a char model, not 8), so a corpus many times larger than memory
trains with a flat footprint, and a rerun or a --resume on the same corpus skips
reading, fitting and encoding.

    cache_dir/
      CACHEDIR.TAG       marks a cache: corpus directory expansion and backup tools skip it
      <key>/             one entry per corpus content, split and tokenizer (see "Key")
        train.bin        training ids, little-endian, dtype in meta.json
        valid.bin        validation ids
        tokenizer.json   the tokenizer that made them (+ tokenizer.model for subwords)
        meta.json        written last: dtype, lengths, SHA-256 of each .bin, validation figures
      .build-<key>-*/    an entry being built; renamed to <key>/ once complete
      .lock-<key>        held (flock) by the one process building <key>

Split. With `valid` files the corpus is all training text. Otherwise the last
`valid_fraction` is held out, cut by `corpus.split_offset`: at the last line start
within 1% (of the total size) before byte floor(size * (1 - valid_fraction)) of the
corpus files laid end to end (sizes on disk, BOM and CRLF included), else at that
byte moved back to a character. The cut depends only on the files' bytes, never on
chunk sizes. The tokenizer is fitted on the training part only.

Key. SHA-256 of: the content of every corpus file and validation file, in order
(each file's bytes with its size; hashed at ~1 GB/s on every call, so a changed
file is always noticed, even with the same size and time stamp), the split
(valid_fraction, when no valid files), the tokenizer kind and options (or, for a
given tokenizer, its data), the encoding-error mode and `FORMAT_VERSION`. A
resumed run passes the tokenizer its checkpoint holds together with the same
level and options: the entry fitted for those is reused when it holds that very
tokenizer, else the ids are re-encoded with it into an entry of its own.

Integrity. Every open checks meta.json, the tokenizer's checksum, and each .bin's
size and SHA-256 (read in blocks: ~1 s per GB). Anything truncated, tampered,
half-written or unreadable is rebuilt, never trusted. A build writes into a
private directory, fsyncs every file (`charlm.fileio`), writes meta.json last and renames the
directory into place; builders of one key take turns under a lock, so the second
reuses the first's entry; leftovers of a killed build are removed by the next one.

Memory is bounded by the chunk size and the vocabulary, never by the corpus:
text is read in blocks of `CHUNK_BYTES`, fitted and encoded chunk by chunk, and
the ids are written as they come. Reading a memmap maps pages on demand: a
trainer should take windows of it (`np.asarray(train[i:j])`), not convert it whole.

Modules: `cache` (finding or building a corpus's entry: `tokenized_corpus`),
`entry` (an entry's files, read back only when every check passes) and `build`
(writing an entry; the cache directory's tag, locks and leftovers).
"""

from charlm.data.tokcache.build import CHUNK_BYTES, Progress
from charlm.data.tokcache.cache import default_cache_dir, shard, tokenized_corpus
from charlm.data.tokcache.entry import TokenizedCorpus

__all__ = ["CHUNK_BYTES", "Progress", "TokenizedCorpus", "default_cache_dir", "shard", "tokenized_corpus"]
