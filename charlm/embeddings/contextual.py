"""Contextual string embeddings (Akbik et al. 2018) from a charlm character language model.

A sentence's words are joined by single spaces and read by the LM after a line start, as it read its
training text. A forward LM's embedding of a word is its state after the word's last character (the
word's end boundary, with the whole left context read); a backward LM (`charlm train --reverse`) reads
the sentence reversed, and its embedding of a word is its state after the word's first character (the
start boundary, with the whole right context read):

    forward   \\n T h e _ c a t _ s a t          the: state at 'e'   cat: at 't'   sat: at 't'
    backward  \\n t a s _ t a c _ e h T          sat: state at 's'   cat: at 'c'   the: at 'T'

The LM is frozen (eval mode, no gradients); a batch of sentences is one padded forward pass (padding
after a sentence's end cannot change its states: the LM reads left to right). With `fast` the LM reads in
bf16 where the device runs it natively (a CPU with AVX512-BF16 or AMX, checked at run time; a GPU of
compute capability 8.0+): about twice as fast, the states rounded to bf16's 8 bits of mantissa. A
tagger reads its LMs that way in training and in tagging alike; `LanguageModel.embed` gives exact fp32.
`embed` keeps the embeddings of the sentences it has seen (`cache_size` of them): a sentence is read once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from charlm.data import Tokenizer, line_start_id
from charlm.runtime import autocast, cpu_bf16_candidate

Words = Sequence[str]


def boundaries(words: Words, reverse: bool) -> tuple[str, np.ndarray]:
    """The text an LM reads for the sentence and, per word, the index in its ids (after the line start)
    of the state that embeds it."""
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    starts = np.cumsum(lengths + 1) - (lengths + 1)  # each word's first character in the joined text
    text = " ".join(words)
    if reverse:
        return text[::-1], len(text) - starts  # the first character, read last: +1 for the line start
    return text, starts + lengths  # the last character: (starts + lengths - 1) + 1 for the line start


class CharLMEmbedding(nn.Module):
    """One character LM's contextual string embeddings of words in sentences (frozen)."""

    lm: Any  # an RNNLanguageModel: `features(ids, state)` -> ((B, T, D), state)

    def __init__(
        self, lm: nn.Module, tokenizer: Tokenizer, reverse: bool, cache_size: int = 20_000, fast: bool = False
    ) -> None:
        super().__init__()
        self.fast = fast
        self.lm = lm.eval()
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.tokenizer, self.reverse = tokenizer, reverse
        start = line_start_id(tokenizer)
        if start is None:
            raise ValueError("the language model's tokenizer has no line end to start a sentence from")
        self.start_id = start
        with torch.no_grad():
            probe, _ = self.lm.features(torch.zeros(1, 1, dtype=torch.long, device=self._device()))
        self.dim = int(probe.size(-1))
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

    def _device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def _dtype(self, device: torch.device) -> torch.dtype | None:
        """bf16 when `fast` and the device runs it natively, else None (fp32)."""
        if not self.fast:
            return None
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else None
        return torch.bfloat16 if device.type == "cpu" and cpu_bf16_candidate(self.lm.config.cell) else None

    def train(self, mode: bool = True) -> CharLMEmbedding:
        super().train(mode)
        self.lm.eval()  # frozen: no dropout whatever the tagger around it does
        return self

    @torch.no_grad()
    def forward(self, sentences: Sequence[Words]) -> torch.Tensor:
        """Embeddings (B, W, D) of a batch of sentences (W: the longest; zeros past a sentence's end)."""
        device = self._device()
        reads = [boundaries(words, self.reverse) for words in sentences]
        ids = [[self.start_id, *self.tokenizer.encode(text)] for text, _ in reads]
        width = max(len(row) for row in ids)
        x = torch.full((len(ids), width), self.start_id, dtype=torch.long)
        for i, row in enumerate(ids):
            x[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        words = max(len(s) for s in sentences)
        where = torch.zeros(len(ids), words, dtype=torch.long)
        for i, (_, at) in enumerate(reads):
            where[i, : len(at)] = torch.from_numpy(at)
        with autocast(device, self._dtype(device)):
            feats, _ = self.lm.features(x.to(device))  # (B, L, D)
        out = feats.float().gather(1, where.to(device).unsqueeze(2).expand(-1, -1, feats.size(2)))  # (B, W, D)
        lengths = torch.tensor([len(s) for s in sentences], device=device)
        return out * (torch.arange(words, device=device) < lengths.unsqueeze(1)).unsqueeze(2)

    def embed(self, sentences: Sequence[Words], batch_size: int = 64) -> list[torch.Tensor]:
        """Each sentence's word embeddings (n_words, D) on the CPU, in float32; read in batches of about
        one length, each sentence once (later calls take it from the cache)."""
        keys = [tuple(s) for s in sentences]
        todo = sorted({k for k in keys if k and k not in self._cache}, key=lambda k: sum(map(len, k)) + len(k))
        found: dict[tuple[str, ...], torch.Tensor] = {}
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            feats = self.forward(batch).cpu()
            for k, f in zip(batch, feats):
                found[k] = f[: len(k)].clone()
        out = []
        for k in keys:
            e = found.get(k)
            if e is None:
                e = self._cache.get(k)
                if e is None:
                    e = torch.zeros(0, self.dim)
                else:
                    self._cache.move_to_end(k)
            out.append(e)
        for k, e in found.items():
            self._cache[k] = e
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out


def embed_batch(embeddings: Sequence[CharLMEmbedding], sentences: Sequence[Words]) -> torch.Tensor | None:
    """The LMs' embeddings of a batch, concatenated: (B, W, sum of D), or None when there are no LMs."""
    if not embeddings:
        return None
    return torch.cat([e(sentences) for e in embeddings], dim=2)
