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
  never a mean of means.

Exact and parallel scoring (`score_stream`):
- exact (streams=1): one stream, state carried from window to window.
- parallel (streams=S>1): the predictions are cut into S contiguous segments
  scored side by side as a batch. Segment 0 continues from the state handed in;
  segment s > 0 starts from a state warmed (not scored) on the `warmup` tokens
  just before it. The returned state is the last segment's, so a following
  call continues that stream.

Kneser-Ney models (`charlm.models.ngram`) are scored by the same functions: their
state is the last N-1 tokens, so a parallel segment warmed on `warmup` >= N-1
tokens would score exactly as one stream does, and they are always scored as
one stream (exact), each token's log-probability looked up in float64
(`token_logprobs`, no (B, T, V) tensor).

A file is streamed: read in chunks, encoded piece by piece (cut where no token
can span the cut, see `token_safe_pieces`) and scored in blocks of a fixed
number of tokens, each block continuing the state of the one before it (see
`_StreamScorer`). The figure therefore depends only on the token stream, never
on how the file was chunked, and memory is bounded by the block and the chunk
size, not by the file size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charlm.data import Tokenizer, iter_text_chunks, line_start_id
from charlm.errors import CorpusError
from charlm.models import LOGIT_BUDGET, KneserNeyModel, RNNLanguageModel, State
from charlm.runtime import autocast, eval_mode

LanguageModel = RNNLanguageModel | KneserNeyModel

# Defaults of the parallel mode (also the CLI's). With 256 warm-up tokens per
# 4096-token segment the warm-up costs 6% extra compute.
DEFAULT_STREAMS = 32
DEFAULT_WINDOW = 256
DEFAULT_WARMUP = 256
DEFAULT_SEGMENT = 4096
EXACT_BLOCK = 1 << 16  # tokens per block in exact mode (any value gives the same figure)
CHUNK_BYTES = 1 << 20
MAX_UNKNOWN_SHOWN = 20
_LN2 = math.log(2.0)


# ------------------------------------------------------------------ the core metric
@dataclass
class StreamScore:
    """Summed negative log-likelihood (nats) over `tokens` scored predictions."""

    nll: float
    tokens: int
    state: State | None = None  # the state after the last input, to continue the stream

    @property
    def loss(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.tokens else float("nan")


def _window_for(batch: int, vocab: int, window: int) -> int:
    return max(1, min(window, LOGIT_BUDGET // max(1, batch * vocab)))


def model_device(model: LanguageModel) -> torch.device:
    """Where the model computes (a Kneser-Ney model has no parameters: its anchor buffer's device)."""
    return model.device if isinstance(model, KneserNeyModel) else next(model.parameters()).device


def _warm_state(model: LanguageModel, ids: torch.Tensor) -> State:
    """The state after reading ids (B, w) from the zero state, nothing scored."""
    if isinstance(model, KneserNeyModel):
        return model.advance(ids)
    return model.features(ids, None)[1]  # features only: no logits needed


def token_logprobs(
    model: LanguageModel,
    x: torch.Tensor,
    y: torch.Tensor,
    state: State | None,
    window: int = DEFAULT_WINDOW,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, State]:
    """ln p(y[b, t] | state, x[b, :t+1]) (B, T) float64 and the state after x: per-token figures, e.g. to mix
    two models. The recurrent model's are minus the float32 NLL that `_score_rows` sums, window by window."""
    if isinstance(model, KneserNeyModel):
        return model.token_logprobs(x, y, state)
    parts, state = _window_nll(model, x, y, state, window, amp_dtype)
    return -torch.cat(parts, dim=1).double(), state


def _window_nll(
    model: RNNLanguageModel,
    x: torch.Tensor,
    y: torch.Tensor,
    state: State | None,
    window: int,
    amp_dtype: torch.dtype | None,
) -> tuple[list[torch.Tensor], State]:
    """The float32 NLL of each target, one (B, t) tensor per window of at most `window` steps, and the state
    after x (B, L). Row b reads x[b] from state[:, b] and predicts y[b]."""
    vocab = model.config.vocab_size
    t = _window_for(x.size(0), vocab, window)
    adaptive = getattr(model, "clusters", None) is not None
    out = []
    for i in range(0, x.size(1), t):
        if adaptive:  # only the targets' probabilities (exact: the same as forward's log-probs give), ~4x faster
            with autocast(x.device, amp_dtype):
                nll, state = model.token_nll(x[:, i : i + t], state, y[:, i : i + t])  # (B, t)
            out.append(nll.float())
            continue
        with autocast(x.device, amp_dtype):
            result = model(x[:, i : i + t], state)
            logits, state = result.logits, result.state  # (B, t, V)
        yw = y[:, i : i + t]  # (B, t)
        nll = F.cross_entropy(logits.float().reshape(-1, vocab), yw.reshape(-1), reduction="none")
        out.append(nll.view(yw.shape))
    assert state is not None  # L >= 1: at least one window ran
    return out, state


def _score_rows(
    model: LanguageModel,
    x: torch.Tensor,
    y: torch.Tensor,
    state: State | None,
    window: int,
    amp_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, State]:
    """Summed NLL (float64 scalar) of rows y given rows x, window by window, and the final state.

    x, y: (B, L); row b reads x[b] from state[:, b] and predicts y[b].
    """
    if isinstance(model, KneserNeyModel):
        lp, state = model.token_logprobs(x, y, state)  # (B, L) float64
        return -lp.sum(), state
    parts, state = _window_nll(model, x, y, state, window, amp_dtype)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for nll in parts:
        total += nll.sum(dtype=torch.float64)
    return total, state


@torch.no_grad()
def score_stream(
    model: LanguageModel,
    ids: torch.Tensor,
    *,
    streams: int = 1,
    window: int = 256,
    warmup: int = 256,
    state: State | None = None,
    amp_dtype: torch.dtype | None = None,
) -> StreamScore:
    """Total NLL of predicting ids[1:] from the tokens before each; see the module doc.

    ids: (N,) int64 on the model's device. `state` is the state before ids[0]
    was read (None: the zero state), e.g. the returned state of the previous
    piece when a long stream is scored in pieces that overlap by one token.

    Parallel layout of the M = N - 1 predictions, S streams, L = M // S, r = M - S * L:

        [r predictions, scored first as one row from `state`]
        row 0:     L predictions, continuing from the state after those r
        row 1..S-1: L predictions each, from a state warmed on the `warmup` inputs before the row
        returned state: row S-1's, which ends at the last input
    """

    def rows(x: torch.Tensor, y: torch.Tensor, st: State | None) -> tuple[torch.Tensor, State]:
        return _score_rows(model, x, y, st, window, amp_dtype)

    parts, last = _in_rows(model, ids, streams, warmup, state, amp_dtype, rows)
    total = torch.zeros((), dtype=torch.float64, device=ids.device)
    for nll in parts:
        total += nll
    return StreamScore(float(total), max(0, ids.numel() - 1), last)


@torch.no_grad()
def stream_logprobs(
    model: LanguageModel,
    ids: torch.Tensor,
    *,
    streams: int = 1,
    window: int = 256,
    warmup: int = 256,
    state: State | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, State | None]:
    """ln p(ids[t+1] | ids[:t+1]) for every t, (N-1,) float64 in stream order, and the state after ids[-2]:
    `score_stream`'s layout and figures (the sum of these is minus its NLL), one per token."""

    def rows(x: torch.Tensor, y: torch.Tensor, st: State | None) -> tuple[torch.Tensor, State]:
        return token_logprobs(model, x, y, st, window, amp_dtype)

    parts, last = _in_rows(model, ids, streams, warmup, state, amp_dtype, rows)
    if not parts:
        return torch.zeros(0, dtype=torch.float64, device=ids.device), last
    return torch.cat([p.reshape(-1) for p in parts]), last  # row-major (S, L) is stream order


def _in_rows(
    model: LanguageModel,
    ids: torch.Tensor,
    streams: int,
    warmup: int,
    state: State | None,
    amp_dtype: torch.dtype | None,
    rows: Callable[[torch.Tensor, torch.Tensor, State | None], tuple[torch.Tensor, State]],
) -> tuple[list[torch.Tensor], State | None]:
    """The parallel layout of `score_stream` with `rows(x, y, state)` scoring the rows: its results (the
    prefix row's, if any, then the S rows') and the state after the last input."""
    with eval_mode(model):
        device = ids.device
        inputs, targets = ids[:-1], ids[1:]  # (M,), (M,)
        m = inputs.numel()
        if m <= 0:
            return [], state
        if isinstance(model, KneserNeyModel):
            streams = 1  # exact at no cost: see the module doc
        s = max(1, min(streams, m // max(1, warmup)))  # a segment is at least `warmup` long
        seg = m // s
        r = m - s * seg  # < s
        out = []
        st = state
        if r:
            first, st = rows(inputs[None, :r], targets[None, :r], st)
            out.append(first)
        x = inputs[r:].view(s, seg)  # (S, L)
        y = targets[r:].view(s, seg)  # (S, L)
        if s > 1:
            w = min(warmup, seg)
            starts = r + torch.arange(1, s, device=device) * seg  # (S-1,)
            warm_idx = starts[:, None] - w + torch.arange(w, device=device)[None, :]  # (S-1, w)
            with autocast(device, amp_dtype):
                warm = _warm_state(model, inputs[warm_idx])
            head = st if st is not None else model.init_state(1, device=device)
            st = tuple(torch.cat([f, ws.to(f.dtype)], dim=1) for f, ws in zip(head, warm))  # each (L, S, H)
        main, st = rows(x, y, st)
        out.append(main)
        last = tuple(t[:, -1:].contiguous() for t in st)  # (L, 1, H): the stream's state after ids[-2]
        return out, last


# ------------------------------------------------------------------ streaming in blocks
class BlockScorer:
    """A token stream fed in pieces of any size, cut into blocks of `block` predictions that overlap by
    one token; a subclass scores each block (`_score`), carrying its state, and sums into `nll` (a float,
    or an array of several figures). See `_StreamScorer`."""

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


class _StreamScorer(BlockScorer):
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
        exact = scoring.exact or isinstance(model, KneserNeyModel)
        super().__init__(
            context_id, EXACT_BLOCK if exact else scoring.streams * max(scoring.segment, scoring.warmup, 1)
        )
        self.model = model
        self.device = model_device(model)
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


# ------------------------------------------------------------------ figures of a text
@dataclass(frozen=True)
class TextScore:
    """The figures of one text, or the sum over several (`+`, `total`): all sums, weighted by tokens."""

    tokens: int  # tokens scored: every token of the text
    nll: float  # summed negative log-likelihood, nats
    chars: int  # characters of the text (after BOM removal and CRLF -> LF)
    bytes: int  # UTF-8 bytes of the same text
    oov: int  # tokens scored as <unk> because the tokenizer does not know them
    unknown: tuple[str, ...] = ()  # the first few distinct unknown units (words, characters), for the report

    @property
    def loss(self) -> float:
        """Mean NLL per token, nats."""
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0)) if self.tokens else float("nan")

    @property
    def bits_per_char(self) -> float:
        return self.nll / _LN2 / self.chars if self.chars else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / _LN2 / self.bytes if self.bytes else float("nan")

    @property
    def oov_rate(self) -> float:
        return self.oov / self.tokens if self.tokens else float("nan")

    def __add__(self, other: TextScore) -> TextScore:
        unknown = tuple(dict.fromkeys(self.unknown + other.unknown))[:MAX_UNKNOWN_SHOWN]
        return TextScore(
            self.tokens + other.tokens,
            self.nll + other.nll,
            self.chars + other.chars,
            self.bytes + other.bytes,
            self.oov + other.oov,
            unknown,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        d["unknown"] = list(self.unknown)
        d.update(
            loss=self.loss,
            perplexity=self.perplexity,
            bits_per_char=self.bits_per_char,
            bits_per_byte=self.bits_per_byte,
            oov_rate=self.oov_rate,
        )
        return d


ZERO = TextScore(0, 0.0, 0, 0, 0)


def total(scores: Iterable[TextScore]) -> TextScore:
    """The figures of the texts taken together: sums of NLL, tokens, characters and bytes."""
    out = ZERO
    for s in scores:
        out = out + s
    return out


def context_id(tokenizer: Tokenizer) -> int:
    """The token read before a text's first token: a line end (see the module doc and `line_start_id`)."""
    token = line_start_id(tokenizer)
    if token is None:
        raise ValueError("this tokenizer has no line end, <eos> or <unk> to start a text from")
    return token


@dataclass(frozen=True)
class Scoring:
    """How a stream is scored (see the module doc): exact (one stream) or parallel segments."""

    exact: bool = False
    streams: int = DEFAULT_STREAMS
    window: int = DEFAULT_WINDOW
    warmup: int = DEFAULT_WARMUP
    segment: int = DEFAULT_SEGMENT
    amp_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        for opt, value in (("streams", self.streams), ("window", self.window), ("segment", self.segment)):
            if value < 1:
                raise ValueError(f"{opt} must be at least 1, got {value}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be at least 0, got {self.warmup}")


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
        scorer = _StreamScorer(model, context, s)
        for i in range(0, n, 1 << 20):
            scorer.feed(np.asarray(ids[i : i + (1 << 20)], dtype=np.int64))
        nll, tokens = scorer.finish()
        return TextScore(tokens, nll, chars, nbytes, oov)
    nll, tokens = sampled_nll(model, ids, context, max_tokens, s)
    share = tokens / n
    return TextScore(tokens, nll, round(chars * share), round(nbytes * share), round(oov * share))


@torch.no_grad()
def sampled_nll(
    model: LanguageModel, ids: np.ndarray, context: int, max_tokens: int, scoring: Scoring
) -> tuple[float, int]:
    """NLL of about `max_tokens` tokens of `ids` in evenly spaced segments: (summed NLL, tokens scored).

    The first segment starts the stream (read after `context`, from the zero
    state); every other one starts from a state warmed on the `warmup` tokens
    before it, as the parallel mode of `score_stream` warms its rows.
    """
    with eval_mode(model):
        device = model_device(model)
        rows = max(1, -(-max_tokens // scoring.segment))  # segments of at most `segment` tokens
        seg = max_tokens // rows
        w = min(scoring.warmup, max(0, len(ids) - seg - 1))
        starts = np.linspace(w + 1, len(ids) - seg, rows - 1).round().astype(np.int64)  # targets t..t+seg of rows 1..

        def take(a: int, b: int) -> np.ndarray:
            return np.asarray(ids[a:b], dtype=np.int64)

        first_x = np.concatenate([[context], take(0, seg - 1)])
        x0, y0 = (torch.from_numpy(a)[None].to(device) for a in (first_x, take(0, seg)))
        total, _ = _score_rows(model, x0, y0, None, scoring.window, scoring.amp_dtype)
        if rows == 1:
            return float(total), seg
        x = torch.from_numpy(np.stack([take(t - 1, t - 1 + seg) for t in starts])).to(device)  # (S-1, seg)
        y = torch.from_numpy(np.stack([take(t, t + seg) for t in starts])).to(device)
        warm = torch.from_numpy(np.stack([take(t - 1 - w, t - 1) for t in starts])).to(device)  # (S-1, w)
        with autocast(device, scoring.amp_dtype):
            state = _warm_state(model, warm) if w else None
        rest, _ = _score_rows(model, x, y, state, scoring.window, scoring.amp_dtype)
        return float(total + rest), seg * rows


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
        _StreamScorer(model, context_id(tokenizer), scoring), tokenizer, chunks, name, progress
    )
    return counts(nll)


def check_vocab(model: LanguageModel, tokenizer: Tokenizer) -> None:
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids, the model {model.config.vocab_size}")


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


# ------------------------------------------------------------------ two models mixed
class MixtureScorer(BlockScorer):
    """Two models read one stream, each token scored by both and by their linear mixtures
    p = (1 - w) p_a + w p_b for every w of `weights`, in float64 (log-sum-exp of the log-probabilities).
    nll: (2 + W,) summed NLL of a alone, b alone, then each mixture.

    Each model scores a block as `score_stream` does under `scoring` (so its column equals its plain
    figure): a recurrent model in parallel rows (one stream when exact), a Kneser-Ney model as one
    stream; the two per-token vectors of the block are then mixed, with no work per token in Python."""

    def __init__(
        self,
        a: LanguageModel,
        b: LanguageModel,
        context_id: int,
        weights: Iterable[float],
        scoring: Scoring | None = None,
    ) -> None:
        self.scoring = scoring = scoring or Scoring(exact=True)
        parallel = not scoring.exact and not all(isinstance(m, KneserNeyModel) for m in (a, b))
        super().__init__(
            context_id, scoring.streams * max(scoring.segment, scoring.warmup, 1) if parallel else EXACT_BLOCK
        )
        self.a, self.b = a, b
        self.device = model_device(a)
        w = torch.tensor(list(weights), dtype=torch.float64, device=self.device)
        if not bool(((w >= 0) & (w <= 1)).all()):
            raise ValueError("mixture weights must lie in [0, 1]")
        self.log_w = torch.stack([torch.log1p(-w), torch.log(w)], dim=1)  # (W, 2): ln(1 - w), ln w
        self.state_a: State | None = None
        self.state_b: State | None = None
        self.nll = np.zeros(2 + len(w))

    def _logprobs(self, model: LanguageModel, ids: np.ndarray, state: State | None) -> tuple[torch.Tensor, State]:
        s = self.scoring
        t = torch.from_numpy(np.ascontiguousarray(ids)).to(model_device(model))
        lp, state = stream_logprobs(
            model,
            t,
            streams=1 if s.exact else s.streams,
            window=s.window,
            warmup=s.warmup,
            state=state,
            amp_dtype=s.amp_dtype,
        )
        assert state is not None  # a block holds at least one prediction
        return lp.to(self.device), state

    @torch.no_grad()
    def _score(self, ids: np.ndarray) -> None:
        lp_a, self.state_a = self._logprobs(self.a, ids, self.state_a)  # (n,) float64
        lp_b, self.state_b = self._logprobs(self.b, ids, self.state_b)
        sums = [lp_a.sum(), lp_b.sum()]
        for log_w in self.log_w:  # one vector operation per weight; a weight of 0 drops its term
            sums.append(torch.logaddexp(lp_a + log_w[0], lp_b + log_w[1]).sum())
        self.nll -= torch.stack(sums).cpu().numpy()
        self.tokens += lp_a.numel()


def evaluate_file_mixture(
    a: LanguageModel,
    b: LanguageModel,
    tokenizer: Tokenizer,
    path: str | os.PathLike,
    weights: Iterable[float],
    *,
    errors: str = "strict",
    chunk_bytes: int = CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
    **scoring: Any,
) -> list[TextScore]:
    """The figures of a file under a alone, b alone, and each mixture (1 - w) p_a + w p_b, in that order;
    protocol as `evaluate_file`, `scoring` its keywords (default: one exact stream per model)."""
    check_vocab(a, tokenizer)
    check_vocab(b, tokenizer)
    scorer = MixtureScorer(a, b, context_id(tokenizer), weights, Scoring(**{"exact": True, **scoring}))
    chunks = iter_text_chunks(path, chunk_bytes=chunk_bytes, errors=errors)
    nll, _, counts = read_text(scorer, tokenizer, chunks, str(path), progress)
    return [counts(v) for v in nll]


WEIGHT_GRID = np.linspace(0.0, 1.0, 101)


def choose_weight(
    a: LanguageModel,
    b: LanguageModel,
    ids: np.ndarray,
    context: int,
    max_tokens: int | None = None,
    **scoring: Any,
) -> tuple[float, np.ndarray]:
    """The weight w of b in (1 - w) p_a + w p_b that minimises the NLL of the stream `ids` (read after
    `context`; its first `max_tokens` tokens when given), and the mean NLL per token at every weight.
    `scoring`: the keywords of `Scoring` (default: one exact stream per model).

    A grid of steps of 0.01 over [0, 1]: the mixture's log-likelihood is concave in w, so the grid's
    best is within 0.01 of the optimum, and one streaming pass scores all weights at once."""
    scorer = MixtureScorer(a, b, context, WEIGHT_GRID, Scoring(**{"exact": True, **scoring}))
    n = len(ids) if max_tokens is None else min(len(ids), max_tokens)
    for i in range(0, n, 1 << 20):
        scorer.feed(np.asarray(ids[i : min(n, i + (1 << 20))], dtype=np.int64))
    nll, tokens = scorer.finish()
    if tokens == 0:
        raise CorpusError("the validation text holds no tokens to choose a mixture weight on; give the weight")
    losses = nll[2:] / tokens
    return float(WEIGHT_GRID[int(np.argmin(losses))]), losses


def count_oov(tokenizer: Tokenizer, piece: str, ids: np.ndarray) -> int:
    """Tokens of `piece` scored as <unk> because the vocabulary lacks them.

    A literal "<unk>" in a word-level text (WikiText, PTB) is a token of the
    vocabulary, not an unknown word, so it is not counted (as in `unknown_units`).
    """
    n = int(np.count_nonzero(ids == tokenizer.unk_id))
    if n and tokenizer.kind == "word" and "<unk>" in piece:
        n = int(np.count_nonzero(np.asarray(tokenizer.encode_array(piece.replace("<unk>", " "))) == tokenizer.unk_id))
    return n


def token_safe_pieces(chunks: Iterable[str], kind: str) -> Iterable[str]:
    """Re-cut text chunks so that no token spans two pieces.

    A char token is one character, so any cut is safe. Word tokens never span a
    line end or a space, subword tokens never span a line end ("\n" is a piece
    of its own), so a piece ends just after the last such separator of what has
    been read and the rest waits for the next chunk. Joined, the pieces equal
    the chunks.
    """
    if kind == "char":
        yield from (c for c in chunks if c)
        return
    seps = ("\n", " ") if kind == "word" else ("\n",)
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = max(text.rfind(sep) for sep in seps) + 1
        if cut:
            yield text[:cut]
        carry = text[cut:]
    if carry:
        yield carry
