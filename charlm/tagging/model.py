"""The tagger: word embeddings + a character BiLSTM per word (+ frozen contextual string embeddings of
character LMs) -> a bidirectional LSTM/GRU -> a softmax per word, or a linear-chain CRF over the tags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from charlm.data import Tokenizer
from charlm.embeddings import CharLMEmbedding
from charlm.models import ModelConfig, RNNLanguageModel, TaggerConfig
from charlm.tagging.batch import TagBatch
from charlm.tagging.crf import CRF
from charlm.tagging.vocab import UNK


class Tagger(nn.Module):
    """Emission scores (B, T, K) for each word of a batch; the loss and decoding by softmax or CRF."""

    def __init__(
        self,
        config: TaggerConfig,
        crf_constraints: tuple[torch.Tensor, ...] | None = None,
        lm_tokenizers: Sequence[Tokenizer] = (),
    ) -> None:
        super().__init__()
        c = self.config = config
        self.lms = nn.ModuleList(
            CharLMEmbedding(RNNLanguageModel(ModelConfig.from_dict(d["model"])), tok, bool(d["reverse"]), fast=True)
            for d, tok in zip(c.lms, lm_tokenizers, strict=True)
        )
        self.lm_dim = sum(e.dim for e in self.embeddings)
        self.word_emb = nn.Embedding(c.num_words, c.word_emb, padding_idx=0)
        self.char_emb = nn.Embedding(c.num_chars, c.char_emb, padding_idx=0)
        self.char_rnn = nn.LSTM(c.char_emb, c.char_hidden, batch_first=True, bidirectional=True)
        rnn = nn.LSTM if c.cell == "lstm" else nn.GRU
        width = c.word_emb + 2 * c.char_hidden + self.lm_dim
        self.rnn = rnn(
            width, c.hidden_size, c.num_layers, batch_first=True, bidirectional=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
        )  # fmt: skip
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(2 * c.hidden_size, c.num_tags)
        self.crf = CRF(c.num_tags, *(crf_constraints or ())) if c.crf else None

    @property
    def embeddings(self) -> list[CharLMEmbedding]:
        """The frozen character LMs' embedders, in the order their features are joined."""
        return [cast(CharLMEmbedding, e) for e in self.lms]

    def train(self, mode: bool = True) -> Tagger:
        super().train(mode)
        for e in self.embeddings:
            e.train(False)  # the LMs stay frozen
        return self

    def char_features(self, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each distinct word's characters read both ways: the two last states (U, 2 * char_hidden)."""
        packed = pack_padded_sequence(self.char_emb(chars), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.char_rnn(packed)  # h: (2, U, H)
        return torch.cat([h[0], h[1]], dim=1)

    def forward(self, b: TagBatch) -> torch.Tensor:
        """Emission scores (B, T, K)."""
        words = b.words
        if self.training and self.config.word_dropout > 0:
            drop = torch.rand(words.shape, device=words.device) < self.config.word_dropout
            words = words.masked_fill(drop & b.mask, UNK)
        parts = [self.word_emb(words), self.char_features(b.chars, b.char_lengths)[b.word_index]]  # (B, T, .)
        if self.lm_dim:
            assert b.lm is not None, "this tagger reads contextual embeddings: give the batch its `lm`"
            parts.append(b.lm)
        x = self.drop(torch.cat(parts, dim=2))  # (B, T, E)
        lengths = b.mask.sum(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(1))  # (B, T, 2H)
        return self.out(self.drop(out)).float()  # (B, T, K)

    def loss(self, b: TagBatch) -> torch.Tensor:
        """The mean negative log-likelihood per tag (the CRF's of each sentence, summed over the batch's tags)."""
        assert b.tags is not None
        emissions = self(b)
        n = b.mask.sum()
        if self.crf is not None:
            return self.crf.nll(emissions, b.tags, b.mask).sum() / n
        logp = emissions.log_softmax(-1).gather(2, b.tags.unsqueeze(2)).squeeze(2)  # (B, T)
        return -(logp * b.mask).sum() / n

    @torch.no_grad()
    def decode(self, b: TagBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The best tags (B, T) and the probability of each (B, T): the CRF's Viterbi path with its per-word
        marginals, or each word's most likely tag."""
        emissions = self(b)
        if self.crf is not None:
            tags, _ = self.crf.viterbi(emissions, b.mask)
            probs = self.crf.marginals(emissions, b.mask).gather(2, tags.unsqueeze(2)).squeeze(2)
            return tags, probs
        probs, tags = emissions.softmax(-1).max(-1)
        return tags.masked_fill(~b.mask, 0), probs * b.mask
