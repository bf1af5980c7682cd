"""An exact hash table from words (UTF-8 bytes) to ids, that looks up all the words of a chunk at once."""

from __future__ import annotations

import numpy as np

from charlm.data.tokenizers.wordscan import PAD, Spans

_MAX_BLOCKS = 32  # words up to 32 8-byte blocks (256 bytes) are matched with numpy, longer ones through a dict
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd (2^64 / golden ratio): multiplicative hashing keeps the top bits
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)  # [k]: keep k bytes


def _u64_view(buf: bytes) -> np.ndarray:
    """view[i] = the 8 bytes of buf from offset i, as a little-endian integer (an overlapping, unaligned view)."""
    return np.ndarray((len(buf) - 7,), "<u8", buffer=buf, strides=(1,))


def _block(view: np.ndarray, starts: np.ndarray, lens: np.ndarray, j: int) -> np.ndarray:
    """Block j (bytes 8j..8j+7) of each span, zero past the span's end."""
    if j == 0:  # the hot case: every word's first block
        return view[starts] & _LOW_BYTES[np.minimum(lens, 8)]
    return view[starts + 8 * j] & _LOW_BYTES[np.minimum(lens - 8 * j, 8)]


def hash_spans(view: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of each span's bytes (of its first _MAX_BLOCKS blocks), and its first block."""
    first = _block(view, starts, lens, 0)
    h = first * _HASH_MUL
    more = np.flatnonzero(lens > 8)
    for j in range(1, _MAX_BLOCKS):
        if not more.size:
            break
        hm = h[more]
        h[more] = (hm ^ (hm >> 29) ^ _block(view, starts[more], lens[more], j)) * _HASH_MUL
        more = more[lens[more] > 8 * (j + 1)]
    return h, first


class WordTable:
    """An exact map from words (UTF-8 bytes) to ids 0, 1, ... that looks up all the words of a chunk at once.

    Open addressing with linear probing on a multiplicative hash of each word's
    8-byte blocks. A slot's word is taken only when its length and every block
    equal the token's, so a hash collision costs a probe, never a wrong id: the
    result is exact, with no probability of error. Words over 256 bytes (rare)
    live in a plain dict.
    """

    def __init__(self) -> None:
        self.words: list[bytes] = []  # id -> word
        self._long: dict[bytes, int] = {}
        # per id, in arrays with spare room; the spare entries keep length -1, so the empty slot (-1),
        # which reads the last entry, matches no token
        self._lens = np.full(16, -1, np.int64)
        self._firsts = np.zeros(16, np.uint64)  # the first block
        self._hashes = np.zeros(16, np.uint64)
        self._offsets = np.zeros(16, np.int64)  # where its blocks start in _blocks
        self._blocks = np.zeros(16, np.uint64)
        self._n_blocks = 0
        self._slots = np.full(16, -1, np.int32)  # id or -1
        self._n_slotted = 0

    def add(self, words: list[bytes]) -> None:
        """Append new words (not already in the table), taking the next ids."""
        first_id, n = len(self.words), len(words)
        self.words.extend(words)
        lens = np.fromiter(map(len, words), np.int64, count=n)
        packed = b"".join(w + bytes(-len(w) % 8) for w in words) + PAD
        n_blocks = (lens + 7) // 8
        starts = np.concatenate([[0], np.cumsum(n_blocks)[:-1]]).astype(np.int64) * 8  # in bytes of `packed`
        hashes, firsts = hash_spans(_u64_view(packed), starts, lens)
        total = first_id + n
        self._lens = _fit(self._lens, total + 1, -1)  # + 1: the last entry must stay spare
        self._firsts = _fit(self._firsts, total + 1, 0)
        self._hashes = _fit(self._hashes, total + 1, 0)
        self._offsets = _fit(self._offsets, total + 1, 0)
        self._blocks = _fit(self._blocks, self._n_blocks + len(packed) // 8, 0)
        self._lens[first_id:total], self._firsts[first_id:total], self._hashes[first_id:total] = lens, firsts, hashes
        self._offsets[first_id:total] = self._n_blocks + starts // 8
        self._blocks[self._n_blocks : self._n_blocks + len(packed) // 8] = np.frombuffer(packed, "<u8")
        self._n_blocks += int(n_blocks.sum())
        long = lens > 8 * _MAX_BLOCKS
        self._long.update((words[i], first_id + i) for i in np.flatnonzero(long).tolist())
        self._n_slotted += n - int(long.sum())
        if 4 * self._n_slotted > len(self._slots):  # at most a quarter full, so probes stay short: rebuild larger
            self._slots = np.full(1 << (4 * self._n_slotted).bit_length(), -1, np.int32)
            self._insert(np.flatnonzero(self._lens[:total] <= 8 * _MAX_BLOCKS))
        else:
            self._insert(first_id + np.flatnonzero(~long))

    def find(self, word: bytes) -> int:
        """The id of one word, or -1."""
        buf = word + PAD
        return int(self.lookup(Spans(buf, np.zeros(1, np.int64), np.array([len(word)]), np.zeros(0, np.int64)))[0])

    def lookup(self, spans: Spans) -> np.ndarray:
        """The id of every span's word (int64), -1 where the table lacks it."""
        view, starts, lens = _u64_view(spans.buf), spans.starts, spans.ends - spans.starts
        hashes, firsts = hash_spans(view, starts, lens)
        slot = (hashes >> self._shift).astype(np.intp)
        cand = self._slots[slot]
        out = np.where(self._matches(view, starts, lens, firsts, cand), cand, -1)
        todo = np.flatnonzero((out < 0) & (cand >= 0))  # another word holds the slot: probe the next ones
        while todo.size:
            slot[todo] = (slot[todo] + 1) & (len(self._slots) - 1)
            cand = self._slots[slot[todo]]
            found = self._matches(view, starts[todo], lens[todo], firsts[todo], cand)
            out[todo[found]] = cand[found]
            todo = todo[~found & (cand >= 0)]
        for i in np.flatnonzero(lens > 8 * _MAX_BLOCKS).tolist():
            out[i] = self._long.get(spans.buf[starts[i] : spans.ends[i]], -1)
        return out

    def lookup_adding(self, spans: Spans) -> np.ndarray:
        """The id of every span's word, adding the words the table lacks (one Python step per new word)."""
        ids = self.lookup(spans)
        while (missing := np.flatnonzero(ids < 0)).size:
            # one representative per distinct hash is added; two new words sharing a hash take two rounds
            sub = Spans(spans.buf, spans.starts[missing], spans.ends[missing], spans.newlines[:0])
            hashes, _ = hash_spans(_u64_view(sub.buf), sub.starts, sub.ends - sub.starts)
            _, first = np.unique(hashes, return_index=True)
            self.add([spans.buf[s:e] for s, e in zip(sub.starts[first].tolist(), sub.ends[first].tolist())])
            ids[missing] = self.lookup(sub)
        return ids

    def _matches(
        self, view: np.ndarray, starts: np.ndarray, lens: np.ndarray, firsts: np.ndarray, ids: np.ndarray
    ) -> np.ndarray:
        """Whether each span holds word `ids` (an empty slot's -1 matches nothing)."""
        same = (self._firsts[ids] == firsts) & (self._lens[ids] == lens)
        longer = np.flatnonzero(same & (lens > 8))
        if longer.size:
            same[longer] = self._same_tail(view, starts[longer], lens[longer], ids[longer])
        return same

    @property
    def _shift(self) -> np.uint64:
        return np.uint64(64 - (len(self._slots).bit_length() - 1))

    def _same_tail(self, view: np.ndarray, starts: np.ndarray, lens: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Whether each span's blocks after the first equal those of word `ids` (lengths already equal)."""
        same = np.ones(len(ids), bool)
        more = np.arange(len(ids))
        for j in range(1, _MAX_BLOCKS):
            more = more[same[more] & (lens[more] > 8 * j)]
            if not more.size:
                break
            same[more] = _block(view, starts[more], lens[more], j) == self._blocks[self._offsets[ids[more]] + j]
        return same

    def _insert(self, ids: np.ndarray) -> None:
        """Put ids in their slots: each probes from its hash's slot to the first free one."""
        mask = len(self._slots) - 1
        pos = (self._hashes[ids] >> self._shift).astype(np.intp)
        while ids.size:
            free = np.flatnonzero(self._slots[pos] < 0)
            _, first = np.unique(pos[free], return_index=True)  # several may want one slot: the first takes it
            taken = free[first]
            self._slots[pos[taken]] = ids[taken]
            left = np.ones(ids.size, bool)
            left[taken] = False
            ids, pos = ids[left], (pos[left] + 1) & mask


def _fit(arr: np.ndarray, n: int, fill: int) -> np.ndarray:
    """`arr`, or a copy with room for at least n entries (doubling, new entries = fill)."""
    if len(arr) >= n:
        return arr
    grown = np.full(max(n, 2 * len(arr)), fill, arr.dtype)
    grown[: len(arr)] = arr
    return grown
