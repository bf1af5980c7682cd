"""Counter-based random numbers, one stream per sequence: a row's draws depend on its seed and its own step.

torch's generators give one stream for a whole batch, so a prompt's text would depend on which other
prompts share its batch and in which order. Here row r's k-th uniform is a hash of (its key, k), computed
for every row at once on the device: decoding 256 prompts as one batch, or a request that joins a server's
running batch half-way, draws exactly what decoding that prompt alone draws.

    key = splitmix64(seed, sample index)        host, once per row
    u[r, k] = pcg_hash chain(key_r, k) in [0, 1) with 53 random bits, computed a block of steps at a time

The hash is PCG's output permutation (O'Neill 2014) on 32-bit words held in int64 tensors: every product
stays below 2**63, so the arithmetic is exact and the same on every device. A token is drawn by inverting
the cumulative distribution at u (`charlm.sampling.filters.sample_next`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
BLOCK = 64  # uniforms computed per row at once: one small batch of integer ops per 64 steps


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def row_key(seed: int, sample: int = 0) -> tuple[int, int]:
    """The two 32-bit words of the key of sample `sample` of a request seeded with `seed` (any int >= 0)."""
    k = _splitmix64(_splitmix64(seed) ^ (sample * 0xD1B54A32D192ED03 & _M64))
    return k & _M32, k >> 32


def derived_seed(seed: int, n: int) -> int:
    """The n-th seed derived from `seed` (62 bits): a session's later prompts, each reproducible."""
    return _splitmix64(seed ^ _splitmix64(n)) >> 2


def _pcg(x: torch.Tensor) -> torch.Tensor:
    """PCG's RXS-M-XS hash of 32-bit words held in int64 (each < 2**32): a new tensor of 32-bit words."""
    state = (x * 747796405 + 2891336453) & _M32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & _M32
    return (word >> 22) ^ word


def uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """keys (B, 2) int64 32-bit words, counters (...) int64 broadcastable to (B, ...) -> float64 in [0, 1)."""
    shape = (keys.size(0),) + (1,) * (counters.dim() - 1 if counters.dim() else 0)
    k0, k1 = keys[:, 0].view(shape), keys[:, 1].view(shape)
    a = _pcg((counters & _M32) ^ k1)
    b = _pcg(a ^ k0)
    c = _pcg(b ^ 0x9E3779B9)
    return ((b << 21) | (c >> 11)).double() / float(1 << 53)  # 32 + 21 = 53 random bits


class RowRandom:
    """The random streams of a batch's rows: `next()` gives each row its next uniform (B,), float64.

    Rows step together here (a batch started together); `charlm.sampling.batch` keeps a counter per row.
    `select` keeps some rows (a batch whose rows end at different times), in their order.
    """

    def __init__(self, keys: torch.Tensor, start: int = 0) -> None:
        self.keys = keys  # (B, 2) int64
        self.count = start
        self._block: torch.Tensor | None = None  # (B, BLOCK) uniforms for steps [self._base, self._base + BLOCK)
        self._base = 0

    @classmethod
    def seeded(
        cls, seed: int, rows: int = 1, device: torch.device | str = "cpu", samples: Sequence[int] | None = None
    ) -> RowRandom:
        """Row i draws the stream of sample `samples[i]` (default i) of `seed`."""
        which = range(rows) if samples is None else samples
        keys = torch.tensor([row_key(seed, s) for s in which], dtype=torch.long, device=device)
        return cls(keys.view(-1, 2))

    def next(self) -> torch.Tensor:
        """Each row's next uniform: (B,) float64 in [0, 1)."""
        if self._block is None or not self._base <= self.count < self._base + BLOCK:
            self._base = self.count
            steps = torch.arange(self._base, self._base + BLOCK, dtype=torch.long, device=self.keys.device)
            self._block = uniforms(self.keys, steps[None, :])  # (B, BLOCK)
        u = self._block[:, self.count - self._base]
        self.count += 1
        return u

    def select(self, index: torch.Tensor) -> None:
        """Keep the rows `index` (B',) of the batch, in that order."""
        self.keys = self.keys[index]
        if self._block is not None:
            self._block = self._block[index]


def seed_of(source: torch.Generator | int | None) -> int:
    """A seed for `RowRandom.seeded`: an int as given; one 62-bit draw from a torch.Generator (a REPL session's
    generator moves on, so its next prompt draws other text); one draw from torch's global generator for None."""
    if isinstance(source, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=source, device=source.device).item())
    if source is None:
        return int(torch.randint(0, 2**62, (1,)).item())
    return int(source)
