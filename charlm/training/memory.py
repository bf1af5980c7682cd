"""What memory a device has for this process and what a job will need of it, so that a job too big for the
machine is refused in one line before it allocates, instead of ending in an allocator traceback or the
kernel's OOM killer.

    available_bytes(device)      the CPU: MemAvailable, lowered by a cgroup limit; CUDA: the device's free memory
    parameter_count(model)       the model's parameters, counted from its options (nothing is built)
    training_need(...)           weights + gradients + optimiser state + one training window (or validation)
    scoring_bytes, dynamic_bytes, decoding_bytes
                                 what `perplexity` (parallel streams, --dynamic) and `generate` hold
    require(need, device, ...)   the one-line ConfigError when a need does not fit
    check_training(config, ...)  `require` for a training run, naming the option to change

Estimates count the tensors a job holds at its peak, in float32 (autocast only
makes activations smaller), with constants measured on torch 2.13's CPU kernels;
a job is refused above MARGIN of what is available, the rest being for the
allocator's slack and what an estimate misses. They are meant to refuse what
cannot fit, not to promise that everything below them does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from charlm.evaluation import DEFAULT_SEGMENT, DEFAULT_WARMUP
from charlm.models import LOGIT_BUDGET, ModelConfig
from charlm.runtime.memory import FLOAT, require
from charlm.training.autosize import default_batch
from charlm.training.config import TrainConfig

# A job is refused when its estimate is above this share of the memory available: the rest is
# for the allocator's fragmentation, the interpreter, torch's own buffers and what the estimate misses.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# Floats a training window holds per hidden unit, time step and layer until the backward has used them:
# what autograd saves (measured with saved_tensors_hooks on torch 2.13's oneDNN layers: LSTM 16.4-18.4,
# GRU 8-9, Elman 2-3, the upper figure with a dropout mask per element) plus the gradients of a layer's
# output, input and gates while its backward runs. Set so that the estimate of a 2-step run's peak
# resident memory (getrusage) came within 10% for a 2x3072 LSTM and 2x1024 and 2x2048 GRUs; the same run
# measured up to 2x that in some processes (glibc's malloc keeping freed blocks), which no margin covers:
# the check refuses what cannot fit, it does not promise that everything below it does.
ACTIVATION_FLOATS = {"lstm": 22, "gru": 14, "rnn": 8}
# What a process that trains holds besides its tensors: torch's kernels and thread buffers, measured
# ~100 MiB as the first training steps of a tiny model.
RUNTIME_BYTES = 128 * 2**20
# A training window's output layer holds the scores, their log-softmax (saved) and its gradient.
LOGIT_COPIES = 3
# Floats per hidden unit and step of a forward pass without gradients (validation's warm-up, dynamic
# evaluation's static model): a layer's input, output and gate buffer at once.
INFERENCE_FLOATS = 8


def parameter_count(c: ModelConfig) -> int:
    """The parameters `RNNLanguageModel(c)` has, counted from its options (a tied matrix once)."""
    n = c.vocab_size * c.emb_size  # embedding (V, E)
    for i in range(c.num_layers):
        inp = c.emb_size if i == 0 else c.hidden_size
        n += GATES[c.cell] * c.hidden_size * (inp + c.hidden_size + 2)  # W_ih, W_hh, b_ih, b_hh
    d = c.emb_size if c.tie_weights else c.hidden_size  # the decoder's input width
    if c.tie_weights and c.hidden_size != c.emb_size:
        n += c.hidden_size * c.emb_size  # projection (E, H), no bias
    n += (0 if c.tie_weights else c.vocab_size * d) + c.vocab_size  # decoder weight (V, D) unless tied, bias (V,)
    if c.adaptive_cutoffs is not None:
        n += len(c.adaptive_cutoffs) * (d + 1)  # one scoring vector and bias per tail cluster
    return n


def logit_width(c: ModelConfig) -> int:
    """Scores per token a training step holds: the vocabulary, or an adaptive softmax's head and its widest
    tail (a token's tail is scored only when its target lies there, so this bounds the sum over tails)."""
    cuts = c.adaptive_cutoffs
    if cuts is None:
        return c.vocab_size
    edges = (*cuts, c.vocab_size)
    return cuts[0] + len(cuts) + max(b - a for a, b in zip(edges, edges[1:]))


def window_bytes(c: ModelConfig, batch_size: int, bptt: int, scored: bool = True) -> int:
    """A training window's activations (ACTIVATION_FLOATS) and scores (LOGIT_COPIES), until its backward ends."""
    per_token = (
        c.num_layers * c.hidden_size * ACTIVATION_FLOATS[c.cell]
        + 3 * c.emb_size  # the embedding lookup, its dropout and mask
        + (LOGIT_COPIES * logit_width(c) if scored else 0)
    )
    return FLOAT * batch_size * bptt * per_token


@dataclass(frozen=True)
class TrainingNeed:
    """The bytes a training run holds at its peak, by part."""

    parameters: int
    weights: int
    gradients: int
    optimizer: int
    window: int  # one training window's activations and scores
    validation: int  # a validation pass (after the window is freed; gradients and optimiser state stay)

    @property
    def model(self) -> int:
        """What the parameters hold whatever the window: weights, gradients, optimiser state."""
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return RUNTIME_BYTES + self.model + max(self.window, self.validation)


def training_need(
    model: ModelConfig,
    batch_size: int,
    bptt: int,
    optimizer: str = "adamw",
    momentum: float = 0.0,
    eval_streams: int = 1,
    scored: bool = True,
) -> TrainingNeed:
    """Bytes to train `model` on (batch_size, bptt) windows with `optimizer` (as `training.optim.make_optimizer`
    makes it: AdamW keeps two moments per parameter, SGD one momentum buffer when momentum > 0) and validate
    with `eval_streams` parallel streams. `scored`: count the window's scores (False while an adaptive
    softmax's clusters are still to be chosen)."""
    p = parameter_count(model)
    moments = 2 if optimizer == "adamw" else 1 if momentum > 0 else 0
    return TrainingNeed(
        parameters=p,
        weights=FLOAT * p,
        gradients=FLOAT * p,
        optimizer=FLOAT * p * moments,
        window=window_bytes(model, batch_size, bptt, scored),
        validation=scoring_bytes(model, eval_streams),
    )


def scoring_bytes(c: ModelConfig, streams: int, warmup: int = DEFAULT_WARMUP, segment: int = DEFAULT_SEGMENT) -> int:
    """What parallel scoring (`charlm.evaluation.scoring.score_stream`) holds besides the weights: per stream its block
    of ids, its states and the warm-up window's activations; the scores, capped by LOGIT_BUDGET unless one
    step of all the streams is above it."""
    ids = 8 * 4 * (segment + warmup)  # int64: the pending pieces, their concatenation, the tensor, x/y views
    states = FLOAT * 4 * c.state_floats  # the first segment's, the warmed ones, their concatenation, the result
    warm = FLOAT * INFERENCE_FLOATS * warmup * c.hidden_size
    scores = FLOAT * LOGIT_COPIES * max(LOGIT_BUDGET, streams * c.vocab_size)
    return streams * (ids + states + warm) + scores


def dynamic_bytes(c: ModelConfig, segment: int) -> int:
    """What dynamic evaluation (`charlm.evaluation.dynamic`) adds to the loaded model: the adapted copy, its gradients,
    one segment's training activations and the scores of both models."""
    p = parameter_count(c)
    return 2 * FLOAT * p + window_bytes(c, 1, segment) + FLOAT * LOGIT_COPIES * segment * c.vocab_size


def check_training(config: TrainConfig, vocab_size: int, device: torch.device | str, world: int = 1) -> None:
    """Refuse a training run whose model, window or validation cannot fit on `device`, before anything is built.

    `charlm.training.tasks.lm_setup` calls it before charlm.training.autosize (which measures an explicit
    --hidden by training a few steps of it) and again once every option is
    chosen. Options still open count as autosize will choose them (the default
    batch) or are left out (an open width: autosize tries small widths first;
    open adaptive-softmax clusters: their scores). Validation scores at most
    eval_tokens tokens, so no more than eval_tokens / warm-up streams. A CPU job
    of `world` processes needs `world` times as much of the one host.
    """
    device = torch.device(device)
    c = config.with_level_defaults()
    if c.model.hidden_size is None or c.task.bptt is None:
        return
    shape = c.model_config(vocab_size, check_only=True)
    if c.model.adaptive_softmax and c.model.adaptive_cutoffs is not None:
        shape = replace(shape, adaptive_cutoffs=c.model.adaptive_cutoffs)
    batch = c.task.batch_size or default_batch(device.type)
    scored = c.model.adaptive_softmax is False or c.model.adaptive_cutoffs is not None or c.tokenizer.level != "word"
    run = c.run
    streams = min(run.eval_streams, max(1, run.eval_tokens // DEFAULT_WARMUP)) if run.eval_tokens else run.eval_streams
    need = training_need(shape, batch, c.task.bptt, c.optim.optimizer, c.optim.momentum, streams, scored)
    processes = world if device.type != "cuda" else 1
    state = {"adamw": "AdamW state", "sgd": "SGD momentum" if c.optim.momentum > 0 else ""}[c.optim.optimizer]
    counted = ", ".join(x for x in ("weights", "gradients", state) if x)
    bptt = c.task.bptt
    what = f"one {batch}x{bptt} window" if need.window >= need.validation else f"validation on {streams:,} streams"
    each = f", for each of {processes} processes" if processes > 1 else ""
    require(
        processes * need.total,
        device,
        f"training a {c.model.num_layers}x{c.model.hidden_size} {c.model.cell.upper()}",
        _training_fix(need, shape, c.tokenizer.level),
        f"{counted} and {what}{each}",
    )


def _training_fix(need: TrainingNeed, shape: ModelConfig, level: str) -> str:
    """The options to change, the one that weighs most first."""
    if need.validation > max(need.window, need.model):
        return "use fewer --eval-streams"
    if need.window > need.model:
        return "use a smaller --batch-size or --bptt (or --hidden, --layers)"
    vocab_params = shape.vocab_size * (shape.emb_size + (0 if shape.tie_weights else shape.hidden_size))
    if level == "word" and vocab_params > need.parameters // 2:
        return "use a smaller --max-vocab or --hidden (or --emb, --layers)"
    return "use a smaller --hidden (or --layers, --batch-size, --bptt)"
