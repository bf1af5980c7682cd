"""Counting n-grams and estimating interpolated modified Kneser-Ney tables, in numpy arrays.

A model of order N is estimated from ONE continuous token stream (line ends are
ordinary tokens: `\\n` for char and subword, `<eos>` for word); every k-gram of
the stream is counted for every k <= N. Estimation follows Chen & Goodman (1998)
and KenLM's lmplz:

    a(g)      adjusted count: the raw count c(g) at the highest order N; below it the
              continuation count N1+(. g), the number of distinct tokens seen before g,
              where the start of the stream counts as one more distinct predecessor
              (as KenLM's <s> does), so every seen n-gram has a(g) >= 1.
    D_k(a)    three discounts per order k from the count-of-counts n_r of a at that
              order: Y = n1/(n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2,
              D3+ = 3 - 4Y n4/n3; D(0) = 0. Fallback: when n1, n2 or n3 is 0, or a
              discount falls outside (0, r], the order uses (0.5, 1, 1.5), KenLM's
              --discount_fallback (0 is excluded too: it could make a weight 0).
    p_k(w|c)  = (a(cw) - D_k(a(cw))) / S(c) + gamma(c) p_{k-1}(w|c'),   c' = c without its first token,
              S(c) = sum_w a(cw), gamma(c) = sum_w D_k(a(cw)) / S(c); a context never
              followed by a token (S(c) = 0) has gamma(c) = 1 and p_k = p_{k-1}.
    p_1(w)    = (a(w) - D_1(a(w))) / S + gamma / V,  S = sum_w a(w), gamma = sum_w D_1(a(w)) / S:
              the order-1 rule. The unigram level interpolates with the uniform
              distribution over all V ids, so an id never seen (e.g. <unk>, id 0) gets
              gamma / V > 0. At order N = 1, a(w) = c(w): the discounted unigram
              frequencies plus gamma / V, with no add-one.

The result is in backoff form (`estimate_tables`; `charlm.models.ngram` says how it is read):
per order k, sorted int64 keys, ln P and ln gamma. An n-gram's key is
rank(prefix) * V + last token, rank(prefix) being the prefix's row in the order k-1
table (a unigram's rank is its id), so the continuations of a context are one
contiguous run of keys, and every lookup is a `np.searchsorted` (`find`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from charlm.errors import ConfigError

CHUNK_TOKENS = 1 << 21  # tokens counted at once: ~5 int64 arrays of this size live besides the tables (~100 MB)
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # D1, D2, D3+ where the closed form fails (KenLM's --discount_fallback)
_SORTED_FIND = 1 << 14  # queries at least this many are sorted first: cache-friendly binary searches

Backoff = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]  # per order: keys, ln P, ln gamma


def estimate_tables(
    ids: Any, vocab_size: int, order: int, chunk_tokens: int = CHUNK_TOKENS
) -> tuple[Backoff, np.ndarray]:
    """The backoff tables (keys, ln P, ln gamma) of the model of `order` estimated from the 1-D stream `ids`
    (array-like or np.memmap of any size), and its discounts (N, 4): [0, D1, D2, D3+] per order."""
    if not isinstance(order, (int, np.integer)) or order < 1:
        raise ConfigError(f"order must be an integer of at least 1, got {order!r}")
    # keys are rank * V + id < 2^31 * V: int64 for any table that fits in memory
    if not isinstance(vocab_size, (int, np.integer)) or not 1 <= vocab_size < 1 << 31:
        raise ConfigError(f"vocab size must be an integer in [1, 2^31), got {vocab_size!r}")
    order, vocab_size = int(order), int(vocab_size)
    if np.ndim(ids) != 1 or len(ids) == 0:
        raise ConfigError("a Kneser-Ney model needs a non-empty 1-D stream of token ids; pass some training text")
    if chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    tables = count_ngrams(ids, vocab_size, order, chunk_tokens)
    keys = [k for k, _ in tables]
    suffix = _suffix_rows(keys, vocab_size)
    adjusted = _adjusted_counts(tables, suffix, np.asarray(ids[: order - 1]).astype(np.int64), vocab_size)
    del tables
    logp, logbow, discounts = _interpolate(keys, adjusted, suffix, vocab_size)
    return (keys, logp, logbow), discounts


def sort_by_key(q: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted q, pos in the same order) for non-negative int64 q (overwritten) and pos.

    Packing each value with its position into one int64 lets numpy's SIMD `sort`
    replace `argsort` (~5x faster here); an argsort only when they do not fit."""
    bits = max(1, int(pos.max(initial=0)).bit_length())
    if len(q) and int(q.max()) < (1 << (63 - bits)):
        q <<= bits
        q |= pos
        q.sort()
        keys = q >> bits
        q &= (1 << bits) - 1  # in place: one chunk-sized array fewer at the peak
        return keys, q
    order = np.argsort(q)
    return q[order], pos[order]


def _runs(sq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct values, their counts, the index of each element's value) of a sorted array."""
    new = np.empty(len(sq), dtype=bool)
    new[:1] = True
    np.not_equal(sq[1:], sq[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    index = np.cumsum(new, dtype=np.int64)
    index -= 1
    return sq[starts], np.diff(np.append(starts, len(sq))), index


def _argsort(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted q, the order that sorts it) for non-negative int64 q."""
    return sort_by_key(q.copy(), np.arange(len(q), dtype=np.int64))


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values of two sorted arrays (a stable sort of two runs is a linear merge)."""
    c = np.concatenate([a, b])
    c.sort(kind="stable")
    return _runs(c)[0]


def find(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row of each query in sorted `keys`, -1 where absent. Many queries into a big table
    are sorted first: random binary searches miss the cache at every level (~10x slower)."""
    if len(keys) == 0:
        return np.full(len(q), -1, dtype=np.int64)
    if len(q) >= _SORTED_FIND and len(keys) >= _SORTED_FIND:
        sq, order = _argsort(q)
        pos = np.empty(len(q), dtype=np.int64)
        pos[order] = np.searchsorted(keys, sq)
    else:
        pos = np.searchsorted(keys, q)
    np.minimum(pos, len(keys) - 1, out=pos)
    return np.where(keys[pos] == q, pos, -1)


Tables = list[tuple[np.ndarray, np.ndarray]]  # per order: (sorted keys, counts); order 1: (arange(V), dense counts)


def _chunk_tables(piece: np.ndarray, own: int, vocab: int, order: int) -> Tables:
    """Counts of the k-grams (k <= order) that start in piece[:own]; piece holds order-1 tokens more.

    Each order is sorted once, and the positions travel with the keys (packed into the
    same int64), so the next order's keys (rank of the k-gram here, next token) are built
    in this sorted order: no scatter back to stream order, only a gather from `piece`."""
    tables = [(np.arange(vocab, dtype=np.int64), np.bincount(piece[:own], minlength=vocab))]
    pos = np.arange(own, dtype=np.int64)  # start of each k-gram, in the current sorted order
    rank = piece[:own].astype(np.int64)  # row of the (k-1)-gram at pos in its table (order 1: the id)
    for k in range(2, order + 1):
        if own + k - 1 > len(piece):  # the stream's last chunk: drop the k-grams that would end past it
            fits = pos + k - 1 < len(piece)
            pos, rank = pos[fits], rank[fits]
        rank *= vocab
        rank += piece[pos + (k - 1)]  # (m,) the k-grams' keys
        keys, pos = sort_by_key(rank, pos)
        keys, counts, rank = _runs(keys)
        tables.append((keys, counts))
    return tables


def _rekey(keys: np.ndarray, prefix_map: np.ndarray | None, vocab: int) -> np.ndarray:
    """Keys with prefix ranks moved to a merged table's ranks (a monotone map: stays sorted)."""
    return keys if prefix_map is None else prefix_map[keys // vocab] * vocab + keys % vocab


def _merge_tables(a: Tables, b: Tables, vocab: int) -> Tables:
    """Add two count tables: merge order by order, re-ranking each order's prefixes."""
    out = [(a[0][0], a[0][1] + b[0][1])]
    map_a = map_b = None
    for (ka, ca), (kb, cb) in zip(a[1:], b[1:]):
        ka, kb = _rekey(ka, map_a, vocab), _rekey(kb, map_b, vocab)
        keys = _union(ka, kb)
        map_a, map_b = np.searchsorted(keys, ka), np.searchsorted(keys, kb)
        counts = np.zeros(len(keys), dtype=np.int64)
        counts[map_a] = ca
        counts[map_b] += cb
        out.append((keys, counts))
    return out


def count_ngrams(ids: Any, vocab_size: int, order: int, chunk_tokens: int = CHUNK_TOKENS) -> Tables:
    """Count every k-gram (k <= order) of the stream `ids` (any 1-D integer array-like,
    e.g. an np.memmap), `chunk_tokens` at a time with order-1 tokens of overlap.
    Memory is bounded by the distinct n-grams plus one chunk, not by the stream."""
    n = len(ids)
    total: Tables | None = None
    for start in range(0, n, chunk_tokens):
        piece = np.asarray(ids[start : start + chunk_tokens + order - 1])
        if piece.dtype.kind not in "iu":
            raise ConfigError(f"token ids must be integers, got {piece.dtype}; pass encoded ids")
        if piece.min() < 0 or piece.max() >= vocab_size:
            bad = piece[(piece < 0) | (piece >= vocab_size)][0]
            raise ConfigError(f"token id {bad} is outside the vocabulary of {vocab_size} ids; use the same tokenizer")
        chunk = _chunk_tables(piece, min(chunk_tokens, n - start), vocab_size, order)
        total = chunk if total is None else _merge_tables(total, chunk, vocab_size)
    assert total is not None
    return total


def kn_discounts(adjusted: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] of one order from its adjusted counts (Chen & Goodman eq. 26), or the fallback."""
    n1, n2, n3, n4 = np.bincount(np.minimum(adjusted, 5), minlength=6)[1:5].astype(np.float64)
    if n1 > 0 and n2 > 0 and n3 > 0:
        y = n1 / (n1 + 2.0 * n2)
        d = np.array([1.0 - 2.0 * y * n2 / n1, 2.0 - 3.0 * y * n3 / n2, 3.0 - 4.0 * y * n4 / n3])
        if np.all((d > 0.0) & (d <= np.array([1.0, 2.0, 3.0]))):
            return np.concatenate([[0.0], d])
    return np.array([0.0, *FALLBACK_DISCOUNTS])


def _suffix_rows(keys: list[np.ndarray], vocab: int) -> list[np.ndarray]:
    """Per order k >= 2: the row, in the order k-1 table, of each k-gram's suffix (its last k-1 tokens)."""
    suffix = [np.zeros(0, np.int64)]
    for i in range(1, len(keys)):
        last = keys[i] % vocab
        if i == 1:
            suffix.append(last)
        else:  # suffix(g) = suffix(prefix(g)) extended by g's last token
            suffix.append(find(keys[i - 1], suffix[i - 1][keys[i] // vocab] * vocab + last))
    return suffix


def _row_of(keys: list[np.ndarray], tokens: np.ndarray, vocab: int) -> int:
    """Row of one n-gram (its tokens) in the table of its order, -1 if absent."""
    row = int(tokens[0])
    for i in range(1, len(tokens)):
        if row < 0:
            return -1
        row = int(find(keys[i], np.array([row * vocab + int(tokens[i])]))[0])
    return row


def _adjusted_counts(tables: Tables, suffix: list[np.ndarray], head: np.ndarray, vocab: int) -> list[np.ndarray]:
    """Raw counts at the highest order, continuation counts N1+(. g) below (+1 at the stream's start)."""
    keys = [k for k, _ in tables]
    adjusted = [c for _, c in tables]
    for i in range(len(tables) - 1):
        adjusted[i] = np.bincount(suffix[i + 1], minlength=len(keys[i]))
        if len(head) > i:
            adjusted[i][_row_of(keys, head[: i + 1], vocab)] += 1
    return adjusted


def _interpolate(
    keys: list[np.ndarray], adjusted: list[np.ndarray], suffix: list[np.ndarray], vocab: int
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """ln P and ln gamma per order (the backoff form of the module doc), and the discounts (N, 4)."""
    discounts = np.stack([kn_discounts(a) for a in adjusted])
    d = discounts[0][np.minimum(adjusted[0], 3)]  # (V,)
    total = adjusted[0].sum()
    p = (adjusted[0] - d) / total + d.sum() / total / vocab  # (V,) the order-1 rule
    logp, logbow = [np.log(p)], []
    for i in range(1, len(keys)):
        a, prefix = adjusted[i], keys[i] // vocab
        d = discounts[i][np.minimum(a, 3)]
        mass = np.bincount(prefix, weights=a, minlength=len(keys[i - 1]))  # S(c) per context
        gamma = np.ones(len(keys[i - 1]))
        seen = mass > 0
        gamma[seen] = np.bincount(prefix, weights=d, minlength=len(keys[i - 1]))[seen] / mass[seen]
        p = (a - d) / mass[prefix] + gamma[prefix] * p[suffix[i]]
        logp.append(np.log(p))
        logbow.append(np.log(gamma))
    logbow.append(np.zeros(len(keys[-1])))  # highest-order n-grams are never contexts
    return logp, logbow, discounts
