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

With `adaptive_cutoffs` the output layer is an adaptive softmax (Grave et al.,
2017) over the same decoder matrix: a head over the frequent ids [0, c0) plus
one vector per tail cluster [c_i, c_i+1), each tail a softmax of its own. Ids
must be frequency-ordered (charlm's word tokenizer sorts them). Training asks
`forward(..., targets=y)` for the loss, which computes a tail only for the
tokens whose target lies in it; `forward` without targets and `step` return
exact normalised log-probabilities over the whole vocabulary, which are valid
logits, so evaluation and sampling need no change. The tails keep the full
decoder width (no per-cluster down-projection) so that a tied decoder ties every
word, the tails included; the saving is the cost of the tails for the ~10-20% of
tokens routed there, measured by benchmarks/bench_word.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from charlm.errors import ConfigError
from charlm.models.dropout import drop_weight, embed, seq_dropout
from charlm.models.protocol import LMOutput, State

Pieces = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]  # a decoder's weight and bias, cut by cluster

# Logits held at once (elements, B x T x V) when a long text is read: evaluation and
# prompt reading cut their windows to this, so a big vocabulary gets shorter windows.
LOGIT_BUDGET = 8 * 1024 * 1024

CELLS = ("lstm", "gru", "rnn")
_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's shape; stored in every checkpoint."""

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
        c = counts.detach().cpu().to(torch.float64) + 1.0  # (V,)
        total = c.sum()
        bias = (c / total).log()
        cuts = self.config.adaptive_cutoffs
        if self.clusters is not None and cuts is not None:
            edges = (0, *cuts, self.config.vocab_size)
            scores = torch.empty(len(cuts), dtype=torch.float64)
            for k, (lo, hi) in enumerate(zip(edges[1:], edges[2:])):
                mass = c[lo:hi].sum()
                bias[lo:hi] = (c[lo:hi] / mass).log()
                scores[k] = (mass / total).log()
            self.clusters.bias.copy_(scores)
        self.decoder.bias.copy_(bias)

    @property
    def num_state_tensors(self) -> int:
        return 2 if self.config.cell == "lstm" else 1

    # ----------------------------------------------------------------- state
    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The zero state for `batch_size` sequences."""
        p = self.embedding.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return tuple(
            torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype) for _ in range(self.num_state_tensors)
        )

    # --------------------------------------------------------------- forward
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
        pieces = self._decoder_pieces(whole=_hand_backward(ids)) if sparse else None
        raw, state = self._stack(ids, state, sparse_grad=sparse)
        dropped, x = self._head_input(raw)
        activations = (dropped, raw) if with_activations else None
        if targets is not None:
            loss = self.loss(x.reshape(-1, x.size(-1)), targets.reshape(-1), pieces)  # ()
            return LMOutput(None, loss, state, activations)
        logits = self.log_probs(x) if self.clusters is not None else self.decoder(x)  # (B, T, V)
        return LMOutput(logits, None, state, activations)

    # ------------------------------------------------------- the output layer
    @torch.no_grad()
    def token_nll(self, ids: torch.Tensor, state: State | None, targets: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Evaluation's shortcut: the NLL of each target (B, T) and the new state, in eval mode as `forward`
        gives it, without scoring the whole vocabulary when the output layer need not."""
        raw, state = self._stack(ids, state)
        x = self._head_input(raw)[1]
        return self.nll(x.reshape(-1, x.size(-1)), targets.reshape(-1)).view(targets.shape), state

    def loss(self, x: torch.Tensor, targets: torch.Tensor, pieces: Pieces | None = None) -> torch.Tensor:
        """Mean NLL of `targets` (N,) given decoder inputs x (N, D)."""
        return self.nll(x, targets, pieces).mean()

    def nll(self, x: torch.Tensor, targets: torch.Tensor, pieces: Pieces | None = None) -> torch.Tensor:
        """NLL of each of `targets` (N,) given decoder inputs x (N, D), in fp32: (N,).

        Adaptive softmax: the head (frequent ids and one score per cluster) for every
        token, a tail only for the tokens whose target lies in it. Selecting those
        tokens (`nonzero`) waits for the device once per cluster: nothing on a CPU.
        Training on a CPU takes the hand-written backward of `_AdaptiveNLL`.
        pieces: the decoder's `_decoder_pieces(whole=_hand_backward(x))`, when the caller took them already.
        """
        if _cpu_autocast(x):
            with torch.autocast("cpu", enabled=False):
                return self.nll(x.float(), targets, pieces)
        cuts = self.config.adaptive_cutoffs
        if self.clusters is None or cuts is None:
            ws, bs = pieces or self._decoder_pieces()
            return F.cross_entropy(_wide(F.linear(x, ws[0], bs[0])), targets, reduction="none")
        ws, bs = pieces or self._decoder_pieces(whole=_hand_backward(x))
        cw, cb = self.clusters.weight, self.clusters.bias
        if len(ws) == 1:  # whole: the hand-written backward
            return _AdaptiveNLL.apply(x, ws[0], bs[0], cw, cb, targets, cuts)
        return _adaptive_nll(x, ws, bs, cw, cb, targets, cuts)[0]

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-probabilities over the whole vocabulary: x (..., D) -> (..., V), fp32.

        Full softmax: log_softmax of the decoder's scores. Adaptive: each tail's
        log-softmax plus its cluster's log-probability in the head.
        """
        if _cpu_autocast(x):
            with torch.autocast("cpu", enabled=False):
                return self.log_probs(x.float())
        ws, bs = self._decoder_pieces()
        cuts = self.config.adaptive_cutoffs
        if self.clusters is None or cuts is None:
            return F.log_softmax(_wide(F.linear(x, ws[0], bs[0])), dim=-1)
        head = cuts[0]
        scores = _head_scores(x, ws[0], bs[0], self.clusters.weight, self.clusters.bias)
        head_logp = F.log_softmax(_wide(scores), dim=-1)  # (..., c0 + K)
        parts = [head_logp[..., :head]]
        for k in range(1, len(ws)):
            tail = F.log_softmax(_wide(F.linear(x, ws[k], bs[k])), dim=-1)  # (..., V_k)
            parts.append(tail + head_logp[..., head + k - 1 : head + k])
        return torch.cat(parts, dim=-1)

    def _decoder_pieces(self, whole: bool = False) -> Pieces:
        """The decoder's weight and bias cut at the adaptive cutoffs: (head, tail 1, ...) each; whole without
        cutoffs, or when asked for (`_AdaptiveNLL` cuts them itself, a view of the weight then).

        One `split`, not a slice per cluster: its backward assembles one (V, D) gradient,
        where each slice's would allocate and add a (V, D) tensor of its own (measured 2x
        slower for the whole output layer at V = 13.8k, D = 650).

        Training cuts them before the embedding lookup: autograd then runs the
        split's backward after the lookup's, the tied weight's sparse lookup gradient
        arrives first, and the dense one is added to it in place. Cut after the lookup,
        the dense one arrives first and autograd adds the sparse one out of place, a
        copy of the (V, D) gradient every step (12 ms of a 2x650 word model's ~290 ms
        step at V = 13.8k; benchmarks/bench_word.py).
        """
        cuts = self.config.adaptive_cutoffs
        w, b = self.decoder.weight, self.decoder.bias
        if whole and cuts is not None:  # a view: its backward, too, runs after the lookup's
            return (w.view_as(w),), (b,)
        if cuts is None:  # a split into one piece would only add a copy to the backward
            return (w,), (b,)
        sizes = _sizes(cuts, self.config.vocab_size)
        return w.split(sizes), b.split(sizes)

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


def _sizes(cuts: tuple[int, ...], vocab: int) -> list[int]:
    """The sizes of the head and of each tail cluster."""
    edges = (0, *cuts, vocab)
    return [b - a for a, b in zip(edges, edges[1:])]


def _head_scores(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, cw: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """An adaptive head's scores: the frequent ids' (decoder rows w, b), then one per cluster (cw, cb)."""
    return torch.cat([F.linear(x, w, b), F.linear(x, cw, cb)], dim=-1)  # (..., c0 + K)


def _hand_backward(x: torch.Tensor) -> bool:
    """Whether an adaptive softmax's NLL of x takes `_AdaptiveNLL` (training on a CPU) rather than autograd's
    backward (no gradient wanted, or a GPU, where autocast runs the output layer in half precision)."""
    return x.device.type == "cpu" and torch.is_grad_enabled()


def _adaptive_nll(
    x: torch.Tensor,
    ws: tuple[torch.Tensor, ...],
    bs: tuple[torch.Tensor, ...],
    cw: torch.Tensor,
    cb: torch.Tensor,
    targets: torch.Tensor,
    cuts: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """An adaptive softmax's NLL of `targets` (N,) given decoder inputs x (N, D), fp32 (N,), from the
    decoder's pieces ws, bs (head, tail 1, ...) and the cluster scores' weight cw (K, D) and bias cb (K,).

    Also what a backward needs: the head's log-probabilities (N, c0 + K), each target's
    column in the head (N,), and by tail k = 1, 2, ... that any target falls in: its rows
    (n_k,), log-probabilities (n_k, V_k) and the targets' columns in it (n_k, 1).
    """
    head = cuts[0]
    head_logp = F.log_softmax(_wide(_head_scores(x, ws[0], bs[0], cw, cb)), dim=-1)  # (N, c0 + K)
    cluster = torch.bucketize(targets, torch.tensor(cuts, device=targets.device), right=True)  # (N,) 0 = head
    in_head = torch.where(cluster == 0, targets, head + cluster - 1)  # the head's column for each target
    nll = -head_logp.gather(1, in_head[:, None]).squeeze(1)  # (N,)
    tails = {}
    for k, lo in enumerate(cuts, start=1):
        rows = torch.nonzero(cluster == k).squeeze(1)  # (n_k,)
        if rows.numel() == 0:
            continue
        logp = F.log_softmax(_wide(F.linear(x.index_select(0, rows), ws[k], bs[k])), dim=-1)  # (n_k, V_k)
        inside = (targets.index_select(0, rows) - lo)[:, None]  # (n_k, 1)
        nll = nll.index_add(0, rows, -logp.gather(1, inside).squeeze(1))
        tails[k] = (rows, logp, inside)
    return nll, head_logp, in_head, tails


class _AdaptiveNLL(torch.autograd.Function):
    """An adaptive softmax's NLL (N,) from the whole decoder weight (V, D), with a hand-written backward.

    Autograd's backward of the decoder cut into pieces assembles the (V, D) gradient by
    concatenating one gradient per piece: an extra pass over V x D floats every step
    (~7 ms of a 2x650 word model's ~300 ms step at V = 13.8k on a 2-core CPU;
    benchmarks/results_word.md). This backward writes each piece's matrix product straight
    into its rows of one gradient, and zeros the rows of a cluster no target fell in.
    The forward is `_adaptive_nll`, the function autograd differentiates elsewhere.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, cw, cb, targets, cuts):
        sizes = _sizes(cuts, weight.size(0))
        ws, bs = weight.split(sizes), bias.split(sizes)
        nll, head_logp, in_head, tails = _adaptive_nll(x, ws, bs, cw, cb, targets, cuts)
        ctx.cuts, ctx.present = cuts, list(tails)
        ctx.save_for_backward(x, weight, cw, head_logp, in_head, *(t for tail in tails.values() for t in tail))
        return nll

    @staticmethod
    def backward(ctx, grad):
        x, weight, cw, head_logp, in_head, *saved = ctx.saved_tensors
        cuts, head = ctx.cuts, ctx.cuts[0]
        edges = (*cuts, weight.size(0))
        grad = grad.to(head_logp.dtype)[:, None]  # (N, 1)
        dweight, dbias = torch.empty_like(weight), weight.new_empty(weight.size(0))

        def scores_grad(logp: torch.Tensor, picked: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            """d nll / d scores, times the incoming gradient: (softmax - one-hot) x g."""
            return logp.exp().mul_(g).scatter_add_(1, picked, -g)

        gh = scores_grad(head_logp, in_head[:, None], grad)  # (N, c0 + K)
        torch.mm(gh[:, :head].t(), x, out=dweight[:head])
        torch.sum(gh[:, :head], 0, out=dbias[:head])
        dx = torch.mm(gh[:, :head], weight[:head]).addmm_(gh[:, head:], cw)  # (N, D)
        tails = dict(zip(ctx.present, (saved[i : i + 3] for i in range(0, len(saved), 3))))
        for k, (lo, hi) in enumerate(zip(edges, edges[1:]), start=1):
            if k not in tails:  # no target in this cluster: its rows get no gradient
                dweight[lo:hi].zero_()
                dbias[lo:hi].zero_()
                continue
            rows, logp, inside = tails[k]
            g = scores_grad(logp, inside, grad.index_select(0, rows))  # (n_k, V_k)
            torch.mm(g.t(), x.index_select(0, rows), out=dweight[lo:hi])
            torch.sum(g, 0, out=dbias[lo:hi])
            dx.index_add_(0, rows, torch.mm(g, weight[lo:hi]))
        return dx, dweight, dbias, torch.mm(gh[:, head:].t(), x), gh[:, head:].sum(0), None, None


def _cpu_autocast(x: torch.Tensor) -> bool:
    """Whether x is on a CPU under bf16 autocast, where the output layer is kept in fp32.

    The output layer's matmuls have the vocabulary (or a cluster) as a long inner
    dimension in the backward; oneDNN's bf16 kernels for those shapes measured slower
    than fp32 on an AMX Xeon (a 2x650 word model's step: 508 ms against 379 ms in fp32,
    with the LSTM alone in bf16 334 ms), and the weight would be cast to bf16 every step.
    On a GPU autocast keeps the tensor cores for them.
    """
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def _wide(scores: torch.Tensor) -> torch.Tensor:
    """Scores in at least fp32 for a softmax (autocast's bf16/fp16 widened, fp64 kept)."""
    return scores if scores.dtype == torch.float64 else scores.float()


def _weights(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A one-layer fused RNN's (W_ih, W_hh, b_ih, b_hh), which the cell functions take."""
    return cast(
        tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0),
    )


# ------------------------------------------------------------------ state ops
def detach_state(state: State) -> State:
    """Keep the values, cut the graph: the edge of a truncated-BPTT window.

    window k:   x_1 .. x_T  ->  h_T ──detach──▶ h_0 of window k+1
    Gradients of window k+1 stop at its h_0, so memory stays O(T), not O(corpus).
    """
    return tuple(s.detach() for s in state)


def reorder_state(state: State, index: torch.Tensor) -> State:
    """Select/duplicate sequences along the batch: each (L, B, H) -> (L, len(index), H).

    Beam search uses this to follow each surviving hypothesis's parent.
    """
    return tuple(s.index_select(1, index) for s in state)
