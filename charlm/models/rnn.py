"""The recurrent language model: embedding -> stacked RNN layers -> dropout -> decoder.

Cells are torch's fused recurrent layers (cuDNN on a GPU, oneDNN on a CPU), one
`nn.LSTM`/`nn.GRU`/`nn.RNN` per layer so that locked dropout and weight drop can
sit between and inside layers. A recurrent state is always a tuple of tensors,
each (L, B, H): `(h, c)` for the LSTM, `(h,)` for the GRU and the Elman RNN, so
carrying, detaching, resetting and reordering it is the same for every cell.

`forward` runs whole windows (training, evaluation, prompt warm-up); `step` runs
one token through the cell functions with the same weights, which avoids the
large per-call overhead that oneDNN's fused layer has at T = 1 on a CPU
(about 10x per token for a 2x512 LSTM on a 2-core CPU; benchmarks/bench_generate.py
measures both paths).

With `adaptive_cutoffs` the output layer is an adaptive softmax over the same decoder
matrix (`charlm.models.adaptive`). The model satisfies `charlm.models.LanguageModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from charlm.errors import ConfigError
from charlm.models.adaptive import (
    AdaptiveNLL,
    Pieces,
    adaptive_log_probs,
    adaptive_nll,
    cpu_autocast,
    decoder_pieces,
    hand_backward,
    unigram_bias,
    wide,
)
from charlm.models.dropout import drop_weight, embed, seq_dropout
from charlm.models.packed import read_many
from charlm.models.protocol import LMConfig, LMOutput, State

# Logits held at once (elements, B x T x V) when a long text is read: evaluation and
# prompt reading cut their windows to this, so a big vocabulary gets shorter windows.
LOGIT_BUDGET = 8 * 1024 * 1024

CELLS = ("lstm", "gru", "rnn")
_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's shape; stored in every checkpoint."""

    kind: ClassVar[str] = "rnn"
    vocab_size: int
    cell: str = "lstm"
    num_layers: int = 2
    hidden_size: int = 512
    emb_size: int = 64
    dropout: float = 0.0  # on the last layer's output and between layers
    dropout_input: float = 0.0  # on the embeddings fed to the first layer
    dropout_embed: float = 0.0  # whole word types dropped from the embedding matrix
    weight_drop: float = 0.0  # DropConnect on each layer's hidden-to-hidden matrix
    locked_dropout: bool = False  # one dropout mask per sequence (variational) instead of per element
    tie_weights: bool = False  # decoder shares the embedding matrix (projection if H != E)
    adaptive_cutoffs: tuple[int, ...] | None = None  # adaptive softmax: where the head and each tail cluster end

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        for name in ("vocab_size", "num_layers", "hidden_size", "emb_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "dropout_input", "dropout_embed", "weight_drop"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{name.replace('_', '-')} must be in [0, 1), got {p}")
        cuts = self.adaptive_cutoffs
        if cuts is not None:
            cuts = tuple(int(c) for c in cuts)
            object.__setattr__(self, "adaptive_cutoffs", cuts)  # JSON gives a list
            bounds = (0, *cuts, self.vocab_size)
            if not cuts or any(a >= b for a, b in zip(bounds, bounds[1:])):
                raise ConfigError(
                    f"adaptive softmax cutoffs {list(cuts)} must rise strictly between 0 and the vocabulary size "
                    f"{self.vocab_size}; use --no-adaptive-softmax for a vocabulary this small"
                )

    @property
    def state_floats(self) -> int:
        """Floats of one sequence's recurrent state: (L, H) once, twice for an LSTM's (h, c)."""
        return (2 if self.cell == "lstm" else 1) * self.num_layers * self.hidden_size

    def summary(self) -> str:
        """'2 x 384 LSTM'."""
        return f"{self.num_layers} x {self.hidden_size} {self.cell.upper()}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model options {sorted(unknown)}; was this checkpoint made by a newer charlm?")
        return cls(**d)


class RNNLanguageModel(nn.Module):
    """A stacked LSTM/GRU/Elman language model over a fixed vocabulary."""

    kind = "rnn"
    exact_only = False  # parallel segments and windows score it as fast as the device allows

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.emb_size)
        self.layers = nn.ModuleList(
            _MODULES[c.cell](c.emb_size if i == 0 else c.hidden_size, c.hidden_size, batch_first=True)
            for i in range(c.num_layers)
        )
        # With tying, the decoder reads E-sized features; project when H != E.
        self.projection = (
            nn.Linear(c.hidden_size, c.emb_size, bias=False) if c.tie_weights and c.hidden_size != c.emb_size else None
        )
        self.decoder = nn.Linear(c.emb_size if c.tie_weights else c.hidden_size, c.vocab_size)
        if c.tie_weights:
            self.decoder.weight = self.embedding.weight
        # adaptive softmax: one vector (and bias) per tail cluster, scored in the head beside the frequent ids
        self.clusters = (
            nn.Linear(self.decoder.in_features, len(c.adaptive_cutoffs)) if c.adaptive_cutoffs is not None else None
        )
        self._init_weights()

    @classmethod
    def from_config(cls, config: LMConfig) -> RNNLanguageModel:
        """A fresh model of the shape a stored config gives; ConfigError for another kind's options."""
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"a recurrent model cannot take the options of a {config.summary()}")
        return cls(config)

    def _init_weights(self) -> None:
        """torch's own initialisation (embedding N(0, 1), layers and decoder U(+-1/sqrt(fan_in))), except tied weights.

        Measured on tinyshakespeare (2x384, 150 steps): the word-language-model recipe
        (embedding and decoder in U(-0.1, 0.1)) starves a 64-wide character embedding of
        signal and sits on the unigram plateau (loss 2.19 at step 150 against 1.68), and
        a forget-gate bias of 1 slowed the start too (1.97), so neither is used. A tied
        embedding is also the decoder, where N(0, 1) would give huge logits: it starts
        in U(-0.1, 0.1), as in AWD-LSTM.
        """
        if self.config.tie_weights:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)

    @torch.no_grad()
    def init_output_bias(self, counts: torch.Tensor) -> None:
        """Start the output layer at the training text's unigram distribution.

        counts: (V,) how often each id occurs. Every id's bias becomes its add-one
        smoothed log-frequency; with an adaptive softmax the head's ids get theirs,
        each cluster's score its total log-frequency and a tail's ids their
        log-frequency within the cluster, so the model starts at the same
        distribution. The first steps then learn context, not frequencies, and a
        tied embedding need not carry them in its rows.
        """
        bias, scores = unigram_bias(counts, self.config.adaptive_cutoffs, self.config.vocab_size)
        if self.clusters is not None:
            self.clusters.bias.copy_(scores)
        self.decoder.bias.copy_(bias)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def state_floats(self) -> int:
        return self.config.state_floats

    def describe(self) -> str:
        return "RNN"

    @property
    def num_state_tensors(self) -> int:
        return 2 if self.config.cell == "lstm" else 1

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The zero state for `batch_size` sequences."""
        p = self.embedding.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return tuple(
            torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype) for _ in range(self.num_state_tensors)
        )

    def _stack(self, ids: torch.Tensor, state: State | None, sparse_grad: bool = False) -> tuple[torch.Tensor, State]:
        """Embedding and the recurrent layers: ids (B, T) -> the last layer's raw output (B, T, H), new state.

        sparse_grad: the lookup's gradient is sparse (only when the decoder, tied to the
        embedding, is in the same backward: see `charlm.models.dropout.embed`).
        """
        c = self.config
        if state is None:
            state = self.init_state(ids.size(0))
        x = embed(ids, self.embedding.weight, c.dropout_embed, self.training, sparse_grad)  # (B, T, E)
        x = seq_dropout(x, c.dropout_input, self.training, c.locked_dropout)
        new_state: list[list[torch.Tensor]] = [[] for _ in state]
        for i, layer in enumerate(self.layers):
            if i > 0:  # dropout on non-recurrent connections only (Zaremba et al.): between layers ...
                x = seq_dropout(x, c.dropout, self.training, c.locked_dropout)
            layer_state = tuple(s[i : i + 1].contiguous() for s in state)  # each (1, B, H)
            hx = layer_state if c.cell == "lstm" else layer_state[0]
            if c.weight_drop > 0.0 and self.training:
                w_hh = drop_weight(_weights(layer)[1], c.weight_drop, True)
                x, hy = functional_call(layer, {"weight_hh_l0": w_hh}, (x, hx))  # (B, T, H)
            else:
                x, hy = layer(x, hx)  # (B, T, H)
            for slot, t in zip(new_state, hy if isinstance(hy, tuple) else (hy,)):
                slot.append(t)
        return x, tuple(torch.cat(slot, 0) for slot in new_state)

    def _head_input(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """... and on the output: raw (B, T, H) -> (dropped (B, T, H), the decoder's input (B, T, D))."""
        dropped = seq_dropout(raw, self.config.dropout, self.training, self.config.locked_dropout)
        return dropped, (
            self.projection(dropped) if self.projection is not None else dropped
        )  # (B, T, E) when projected

    def features(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Run the embedding and the recurrent stack over a window.

        ids: (B, T) int64 -> features (B, T, D) before the decoder, and the new state.
        """
        raw, state = self._stack(ids, state)
        return self._head_input(raw)[1], state

    def read_many(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, State]:
        """Prompts of different lengths read as one packed batch: `charlm.models.packed.read_many`."""
        return read_many(self, prompts)

    def warm_state(self, ids: torch.Tensor) -> State:
        """The state after reading ids (B, T) from the zero state: features only, no logits needed."""
        return self.features(ids, None)[1]

    def forward(
        self,
        ids: torch.Tensor,
        state: State | None = None,
        with_activations: bool = False,
        targets: torch.Tensor | None = None,
    ) -> LMOutput:
        """ids: (B, T) int64 -> `LMOutput`: logits (B, T, V) and the state after the last step.

        The logits are the decoder's scores, or with an adaptive softmax exact
        log-probabilities (normalised: also valid logits). Given `targets` (B, T),
        `loss` is instead the mean negative log-likelihood of the targets
        (a scalar, fp32), computed the cheapest way the output layer allows: what
        training asks for, through DDP's wrapper as well.

        With with_activations=True `activations` holds (dropped, raw): the last layer's output after
        and before the output dropout, each (B, T, H), which AWD-LSTM's activation
        regularisation (AR, on dropped) and temporal AR (TAR, on raw) penalise.
        """
        # training's path: the tied decoder's dense gradient absorbs the lookup's sparse one, in
        # place because the decoder is taken before the lookup (see _decoder_pieces)
        sparse = targets is not None and self.config.tie_weights
        pieces = self._decoder_pieces(whole=hand_backward(ids)) if sparse else None
        raw, state = self._stack(ids, state, sparse_grad=sparse)
        dropped, x = self._head_input(raw)
        activations = (dropped, raw) if with_activations else None
        if targets is not None:
            loss = self.loss(x.reshape(-1, x.size(-1)), targets.reshape(-1), pieces)  # ()
            return LMOutput(None, loss, state, activations)
        logits = self.log_probs(x) if self.clusters is not None else self.decoder(x)  # (B, T, V)
        return LMOutput(logits, None, state, activations)

    @torch.no_grad()
    def token_nll(self, ids: torch.Tensor, state: State | None, targets: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Evaluation's figures: the fp32 NLL of each target (B, T) and the new state, in eval mode as `forward`
        gives it. An adaptive softmax scores only the targets' probabilities (exact: the same as forward's
        log-probabilities give, ~4x faster); a full one the cross-entropy of forward's logits."""
        if self.clusters is None:
            out = self(ids, state)
            logits = cast(torch.Tensor, out.logits).float()  # (B, T, V)
            nll = F.cross_entropy(logits.reshape(-1, self.config.vocab_size), targets.reshape(-1), reduction="none")
            return nll.view(targets.shape), out.state
        raw, state = self._stack(ids, state)
        x = self._head_input(raw)[1]
        return self.nll(x.reshape(-1, x.size(-1)), targets.reshape(-1)).view(targets.shape).float(), state

    def loss(self, x: torch.Tensor, targets: torch.Tensor, pieces: Pieces | None = None) -> torch.Tensor:
        """Mean NLL of `targets` (N,) given decoder inputs x (N, D)."""
        return self.nll(x, targets, pieces).mean()

    def nll(self, x: torch.Tensor, targets: torch.Tensor, pieces: Pieces | None = None) -> torch.Tensor:
        """NLL of each of `targets` (N,) given decoder inputs x (N, D), in fp32: (N,).

        Adaptive softmax: the head (frequent ids and one score per cluster) for every
        token, a tail only for the tokens whose target lies in it. Selecting those
        tokens (`nonzero`) waits for the device once per cluster: nothing on a CPU.
        Training on a CPU takes the hand-written backward of `AdaptiveNLL`.
        pieces: the decoder's `_decoder_pieces(whole=hand_backward(x))`, when the caller took them already.
        """
        if cpu_autocast(x):
            with torch.autocast("cpu", enabled=False):
                return self.nll(x.float(), targets, pieces)
        cuts = self.config.adaptive_cutoffs
        if self.clusters is None or cuts is None:
            ws, bs = pieces or self._decoder_pieces()
            return F.cross_entropy(wide(F.linear(x, ws[0], bs[0])), targets, reduction="none")
        ws, bs = pieces or self._decoder_pieces(whole=hand_backward(x))
        cw, cb = self.clusters.weight, self.clusters.bias
        if len(ws) == 1:  # whole: the hand-written backward
            return AdaptiveNLL.apply(x, ws[0], bs[0], cw, cb, targets, cuts)
        return adaptive_nll(x, ws, bs, cw, cb, targets, cuts)[0]

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-probabilities over the whole vocabulary: x (..., D) -> (..., V), fp32.

        Full softmax: log_softmax of the decoder's scores. Adaptive: each tail's
        log-softmax plus its cluster's log-probability in the head.
        """
        if cpu_autocast(x):
            with torch.autocast("cpu", enabled=False):
                return self.log_probs(x.float())
        ws, bs = self._decoder_pieces()
        cuts = self.config.adaptive_cutoffs
        if self.clusters is None or cuts is None:
            return F.log_softmax(wide(F.linear(x, ws[0], bs[0])), dim=-1)
        return adaptive_log_probs(x, ws, bs, self.clusters.weight, self.clusters.bias)

    def _decoder_pieces(self, whole: bool = False) -> Pieces:
        """The decoder's weight and bias cut at the adaptive cutoffs (`charlm.models.adaptive.decoder_pieces`)."""
        return decoder_pieces(self.decoder.weight, self.decoder.bias, self.config.adaptive_cutoffs, whole)

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One decoding step in eval mode, through the cell functions.

        ids: (B,) int64 -> logits (B, V) and the new state. Equal to
        `forward(ids[:, None], state)` in eval mode, without oneDNN's per-call cost.
        """
        c = self.config
        if state is None:
            state = self.init_state(ids.size(0))
        x = self.embedding(ids)  # (B, E)
        new_state: list[list[torch.Tensor]] = [[] for _ in state]
        for i, layer in enumerate(self.layers):
            w_ih, w_hh, b_ih, b_hh = _weights(layer)
            if c.cell == "lstm":
                h, cc = torch.lstm_cell(x, (state[0][i], state[1][i]), w_ih, w_hh, b_ih, b_hh)  # (B, H) each
                new_state[0].append(h)
                new_state[1].append(cc)
            elif c.cell == "gru":
                h = torch.gru_cell(x, state[0][i], w_ih, w_hh, b_ih, b_hh)  # (B, H)
                new_state[0].append(h)
            else:
                h = torch.rnn_tanh_cell(x, state[0][i], w_ih, w_hh, b_ih, b_hh)  # (B, H)
                new_state[0].append(h)
            x = h
        if self.projection is not None:
            x = self.projection(x)  # (B, E)
        out = self.log_probs(x) if self.clusters is not None else self.decoder(x)  # (B, V)
        return out, tuple(torch.stack(slot, 0) for slot in new_state)  # (B, V), each (L, B, H)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> float:
        """Forward multiply-adds x 2 per token (matrix products only); training ~ 3x this."""
        c = self.config
        gates = {"lstm": 4, "gru": 3, "rnn": 1}[c.cell]
        total = 0
        for i in range(c.num_layers):
            inp = c.emb_size if i == 0 else c.hidden_size
            total += gates * c.hidden_size * (inp + c.hidden_size)
        if self.projection is not None:
            total += c.hidden_size * c.emb_size
        total += self.decoder.in_features * c.vocab_size  # exact log-probs: the whole vocabulary is scored
        return 2.0 * total


def _weights(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A one-layer fused RNN's (W_ih, W_hh, b_ih, b_hh), which the cell functions take."""
    return cast(
        tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0),
    )
