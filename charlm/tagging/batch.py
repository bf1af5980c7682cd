"""Sentences as padded tensors: word ids, the characters of each distinct word, tags, the mask.

words  (B, T)  word ids (0 past a sentence's end)     word_index (B, T)  row of each word in `chars`
chars  (U, C)  character ids of the batch's U distinct words, each word's characters read once
mask   (B, T)  True on real words                     tags (B, T) tag ids (or None)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from charlm.tagging.vocab import UNK, TagVocab


@dataclass
class TagBatch:
    """One batch of sentences, ready for the tagger (see the module doc for the shapes)."""

    words: torch.Tensor
    word_index: torch.Tensor
    chars: torch.Tensor
    char_lengths: torch.Tensor
    mask: torch.Tensor
    tags: torch.Tensor | None = None
    lm: torch.Tensor | None = None  # (B, T, D) contextual embeddings, when the tagger has LMs

    def to(self, device: torch.device) -> TagBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return TagBatch(
            self.words.to(device), self.word_index.to(device), self.chars.to(device), self.char_lengths,
            self.mask.to(device), move(self.tags), move(self.lm),
        )  # fmt: skip


def encode(
    vocab: TagVocab,
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]] | None = None,
    lm: Sequence[torch.Tensor] | None = None,
) -> TagBatch:
    """Pad a batch: words and tags by the vocabulary (unknown words: <unk>), `lm` each sentence's (n, D)."""
    B, T = len(sentences), max(len(s) for s in sentences)
    words = torch.zeros(B, T, dtype=torch.long)
    index = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    distinct: dict[str, int] = {}
    for i, s in enumerate(sentences):
        words[i, : len(s)] = torch.tensor([vocab.word_ids.get(w, UNK) for w in s], dtype=torch.long)
        index[i, : len(s)] = torch.tensor([distinct.setdefault(w, len(distinct)) for w in s], dtype=torch.long)
        mask[i, : len(s)] = True
    lengths = torch.tensor([len(w) for w in distinct], dtype=torch.long)
    chars = torch.zeros(len(distinct), int(lengths.max()), dtype=torch.long)
    for w, j in distinct.items():
        chars[j, : len(w)] = torch.tensor(vocab.char_row(w), dtype=torch.long)
    tag_ids = None
    if tags is not None:
        tag_ids = torch.zeros(B, T, dtype=torch.long)
        for i, t in enumerate(tags):
            tag_ids[i, : len(t)] = torch.tensor([vocab.tag_ids[x] for x in t], dtype=torch.long)
    feats = None
    if lm is not None:
        feats = torch.zeros(B, T, lm[0].size(1))
        for i, e in enumerate(lm):
            feats[i, : e.size(0)] = e
    return TagBatch(words, index, chars, lengths, mask, tag_ids, feats)
