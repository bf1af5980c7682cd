"""Perplexity of a text or a file: the one implementation of the metric, used by
training's validation and by `charlm perplexity`.

Protocol (README states it):
- A text is one continuous stream read left to right, each token predicted from
  every token before it, in eval mode (no dropout), starting from the zero state.
- Every token of the text is scored. The first has no token before it, so the
  model reads a line end first (the `\\n` token of the char and subword kinds,
  `<eos>` of the word kind; `<unk>` only if a char vocabulary has no `\\n`) and
  predicts the first token from there: a text is read as if it started a line,
  which is where a validation split begins. So bits per character divide by
  *all* the characters of the text and bits per byte by all its UTF-8 bytes,
  and a char, a word and a subword model pay for the same characters.
- Tokens the tokenizer does not know are scored as `<unk>` and counted (`oov`):
  out-of-vocabulary words, or characters a char model never saw. A model does
  not look better by skipping what it cannot model.
- Figures over several texts are sums (of NLL, tokens, characters, bytes),
  never a mean of means (`charlm.evaluation.metrics`).

How a stream is scored, exactly or in parallel rows: `charlm.evaluation.streams`.

A file is streamed: read in chunks, encoded piece by piece (cut where no token
can span the cut, see `token_safe_pieces`) and scored in blocks of a fixed
number of tokens, each block continuing the state of the one before it (see
`StreamScorer`). The figure therefore depends only on the token stream, never
on how the file was chunked, and memory is bounded by the block and the chunk
size, not by the file size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from charlm.data import Tokenizer, iter_text_chunks, line_start_id, token_safe_pieces
from charlm.errors import CorpusError
from charlm.evaluation.metrics import MAX_UNKNOWN_SHOWN, TextScore
from charlm.evaluation.streams import Scoring, sampled_nll, score_stream
from charlm.models import LanguageModel, State

EXACT_BLOCK = 1 << 16  # tokens per block in exact mode (any value gives the same figure)
CHUNK_BYTES = 1 << 20


def block_size(scoring: Scoring, *models: LanguageModel) -> int:
    """Predictions per block: EXACT_BLOCK for one stream (asked for, or every model `exact_only`), else a
    segment for each parallel stream."""
    if scoring.exact or all(m.exact_only for m in models):
        return EXACT_BLOCK
    return scoring.streams * max(scoring.segment, scoring.warmup, 1)


class BlockScorer:
    """A token stream fed in pieces of any size, cut into blocks of `block` predictions that overlap by
    one token; a subclass scores each block (`_score`), carrying its state, and sums into `nll` (a float,
    or an array of several figures). See `StreamScorer`."""

    def __init__(self, context_id: int, block: int) -> None:
        self.block = block
        self.pending: list[np.ndarray] = [np.array([context_id], dtype=np.int64)]
        self.n_pending = 1
        self.nll: Any = 0.0
        self.tokens = 0

    def feed(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self.pending.append(np.asarray(ids, dtype=np.int64))
        self.n_pending += len(ids)
        if self.n_pending <= self.block:
            return
        buf = np.concatenate(self.pending)
        start = 0
        while len(buf) - start > self.block:
            self._score(buf[start : start + self.block + 1])
            start += self.block  # the last token of a block is the first input of the next
        self.pending, self.n_pending = [buf[start:]], len(buf) - start

    def finish(self) -> tuple[Any, int]:
        buf = np.concatenate(self.pending)
        if len(buf) > 1:
            self._score(buf)
        self.pending, self.n_pending = [buf[-1:]], 1
        return self.nll, self.tokens

    def _score(self, ids: np.ndarray) -> None:
        raise NotImplementedError


class StreamScorer(BlockScorer):
    """Scores a token stream fed in pieces of any size, block by block.

        pieces:  [ctx] a b c | d e f g h | i j ...        (fed as they are encoded)
        blocks:  [ctx a b c d] [d e f g h] [h i j ...]     (`block` predictions each,
                                                            overlapping by one token)

    Each block goes through `score_stream` with the state the previous block
    returned, so the stream goes on across blocks: in exact mode it is one
    stream; in parallel mode a block's first segment continues the previous
    block's last segment, the others are warmed up. Blocks are cut at fixed
    token counts, so the figure does not depend on the pieces.
    """

    def __init__(self, model: LanguageModel, context_id: int, scoring: Scoring) -> None:
        super().__init__(context_id, block_size(scoring, model))
        self.model = model
        self.device = model.device
        self.scoring = scoring
        self.state: State | None = None

    def _score(self, ids: np.ndarray) -> None:
        t = torch.from_numpy(np.ascontiguousarray(ids)).to(self.device)
        s = self.scoring
        streams = 1 if s.exact else s.streams
        out = score_stream(
            self.model, t, streams=streams, window=s.window, warmup=s.warmup, state=self.state, amp_dtype=s.amp_dtype
        )
        self.state, self.nll, self.tokens = out.state, self.nll + out.nll, self.tokens + out.tokens


def context_id(tokenizer: Tokenizer) -> int:
    """The token read before a text's first token: a line end (see the module doc and `line_start_id`)."""
    token = line_start_id(tokenizer)
    if token is None:
        raise ValueError("this tokenizer has no line end, <eos> or <unk> to start a text from")
    return token


def evaluate_text(model: LanguageModel, tokenizer: Tokenizer, text: str, **scoring: Any) -> TextScore:
    """The figures of `text` under the protocol of the module doc.

    `scoring` takes the keywords of `Scoring`: exact=True scores one stream (the
    reference figure); otherwise `streams` parallel segments of `segment` tokens,
    each warmed on `warmup` tokens. Equal to `evaluate_file` on a file holding `text`.
    """
    return _evaluate_pieces(model, tokenizer, [text], "the text", Scoring(**scoring))


def evaluate_file(
    model: LanguageModel,
    tokenizer: Tokenizer,
    path: str | os.PathLike,
    *,
    errors: str = "strict",
    chunk_bytes: int = CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
    **scoring: Any,
) -> TextScore:
    """The figures of a UTF-8 text file, streamed in chunks of `chunk_bytes` (`scoring`: see `evaluate_text`).

    Memory is bounded by the chunk and block sizes, not by the file size (for
    word and subword tokens a piece ends at a line end, so one line is held
    whole). Raises `CorpusError` for a missing, empty, binary or (with
    errors="strict") non-UTF-8 file. `progress(n)` is called with the UTF-8
    byte count of each piece scored.
    """
    chunks = iter_text_chunks(path, chunk_bytes=chunk_bytes, errors=errors)
    return _evaluate_pieces(model, tokenizer, chunks, str(path), Scoring(**scoring), progress)


def evaluate_ids(
    model: LanguageModel,
    ids: np.ndarray,
    context: int,
    *,
    chars: int,
    nbytes: int,
    oov: int,
    max_tokens: int | None = None,
    **scoring: Any,
) -> TextScore:
    """The figures of a stored token stream (say a validation split in the token cache), read after `context`.

    `chars`, `nbytes` and `oov` are the text's own counts (the cache records them).
    The whole stream is scored as `evaluate_text` scores its text, in blocks taken
    from `ids` (a memory map stays on disk). With `max_tokens` below its length,
    `sampled_nll` scores that many tokens in evenly spaced segments instead, and
    characters, bytes and OOV count in proportion to the tokens scored.
    """
    s = Scoring(**scoring)
    n = len(ids)
    if max_tokens is None or n <= max_tokens:
        scorer = StreamScorer(model, context, s)
        for i in range(0, n, 1 << 20):
            scorer.feed(np.asarray(ids[i : i + (1 << 20)], dtype=np.int64))
        nll, tokens = scorer.finish()
        return TextScore(tokens, nll, chars, nbytes, oov)
    nll, tokens = sampled_nll(model, ids, context, max_tokens, s)
    share = tokens / n
    return TextScore(tokens, nll, round(chars * share), round(nbytes * share), round(oov * share))


def _evaluate_pieces(
    model: LanguageModel,
    tokenizer: Tokenizer,
    chunks: Iterable[str],
    name: str,
    scoring: Scoring,
    progress: Callable[[int], None] | None = None,
) -> TextScore:
    check_vocab(model, tokenizer)
    nll, tokens, counts = read_text(
        StreamScorer(model, context_id(tokenizer), scoring), tokenizer, chunks, name, progress
    )
    return counts(nll)


def check_vocab(model: LanguageModel, tokenizer: Tokenizer) -> None:
    if tokenizer.vocab_size != model.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids, the model {model.vocab_size}")


def read_text(
    scorer: BlockScorer,
    tokenizer: Tokenizer,
    chunks: Iterable[str],
    name: str,
    progress: Callable[[int], None] | None = None,
) -> tuple[Any, int, Callable[[float], TextScore]]:
    """Encode text chunks under the protocol (token-safe pieces, OOV counted) and feed them to `scorer`:
    (its summed NLL, tokens scored, nll -> the text's TextScore with that NLL)."""
    chars = nbytes = oov = 0
    unknown: dict[str, None] = {}
    for piece in token_safe_pieces(chunks, tokenizer.kind):
        ids = np.asarray(tokenizer.encode_array(piece), dtype=np.int64)
        n_bytes = len(piece.encode("utf-8"))
        chars += len(piece)
        nbytes += n_bytes
        n_oov = count_oov(tokenizer, piece, ids)
        if n_oov:
            oov += n_oov
            if len(unknown) < MAX_UNKNOWN_SHOWN:
                unknown.update(dict.fromkeys(tokenizer.unknown_units(piece)))
        scorer.feed(ids)
        if progress is not None:
            progress(n_bytes)
    nll, tokens = scorer.finish()
    if tokens == 0:
        raise CorpusError(f"{name} holds no tokens to score (only whitespace?); pass a file with some text")
    shown = tuple(unknown)[:MAX_UNKNOWN_SHOWN]
    return nll, tokens, lambda value: TextScore(tokens, float(value), chars, nbytes, oov, shown)


def count_oov(tokenizer: Tokenizer, piece: str, ids: np.ndarray) -> int:
    """Tokens of `piece` scored as <unk> because the vocabulary lacks them.

    A literal "<unk>" in a word-level text (WikiText, PTB) is a token of the
    vocabulary, not an unknown word, so it is not counted (as in `unknown_units`).
    """
    n = int(np.count_nonzero(ids == tokenizer.unk_id))
    if n and tokenizer.kind == "word" and "<unk>" in piece:
        n = int(np.count_nonzero(np.asarray(tokenizer.encode_array(piece.replace("<unk>", " "))) == tokenizer.unk_id))
    return n
