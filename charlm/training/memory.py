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

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from charlm.errors import ConfigError
from charlm.evaluation.scoring import DEFAULT_SEGMENT, DEFAULT_WARMUP
from charlm.models.rnn import LOGIT_BUDGET, ModelConfig
from charlm.training.autosize import default_batch
from charlm.training.config import TrainConfig

# A job is refused when its estimate is above this share of the memory available: the rest is
# for the allocator's fragmentation, the interpreter, torch's own buffers and what the estimate misses.
MARGIN = 0.9
FLOAT = 4  # bytes: parameters, gradients, optimiser state and activations are float32
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
# Host bytes per generated token of each sequence a whole-result decoding holds until it ends (measured
# with getrusage: 94-147 for a batch of samples, 450-615 per beam slot, whose history keeps 2 x width
# candidates a step with back-pointers; rounded up).
SAMPLE_TOKEN_BYTES = 160
BEAM_TOKEN_BYTES = 640
# Copies of a decoding step's (sequences, V) scores: log-softmax, the filters' sort (values and int64
# indices), probabilities, a beam's candidate sums.
DECODE_LOGIT_COPIES = 6
# A cgroup "no limit" reads as a huge number (v1: 2^63 rounded down to a page).
_NO_LIMIT = 1 << 60

PROC_MEMINFO = Path("/proc/meminfo")
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory this process may still take on `device`: a CUDA device's free memory, else the host's."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available_bytes()  # the CPU, and the unified memory of an Apple GPU


def host_available_bytes() -> int:
    """The smaller of the kernel's MemAvailable and the headroom under every cgroup limit above this process.

    Without /proc (not Linux), the machine's physical memory: an optimistic figure,
    which may let a job through that fails later, but never refuses one that fits.
    """
    figures = [f for f in (_meminfo_available(), _cgroup_headroom()) if f is not None]
    if figures:
        return max(0, min(figures))
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return _NO_LIMIT  # nothing to measure: refuse nothing


def _meminfo_available() -> int | None:
    try:
        for line in PROC_MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """min over this process's cgroup and its ancestors of limit - (usage - inactive file cache), or None.

    cgroup v2 (memory.max, memory.current) or v1 (memory.limit_in_bytes,
    memory.usage_in_bytes); the page cache the kernel can drop does not count as used.
    """
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":  # v2: one unified hierarchy
            root = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else CGROUP_ROOT / "unified"
            files = ("memory.max", "memory.current", "inactive_file")
        elif "memory" in parts[1].split(","):
            root, files = (
                CGROUP_ROOT / "memory",
                ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
            )
        else:
            continue
        for directory in _cgroup_dirs(root, parts[2]):
            headroom = _headroom(directory, *files)
            if headroom is not None:
                best = headroom if best is None else min(best, headroom)
    return best


def _cgroup_dirs(root: Path, path: str) -> list[Path]:
    """The cgroup's directory and its ancestors up to the mount's root (a container sees its own cgroup as root)."""
    own = root / path.strip("/")
    dirs = [d for d in (own, *own.parents) if d == root or root in d.parents]
    return [d for d in dirs if d.is_dir()] or ([root] if root.is_dir() else [])


def _headroom(directory: Path, limit_file: str, usage_file: str, cache_key: str) -> int | None:
    try:
        limit_text = (directory / limit_file).read_text().strip()
        if limit_text == "max":
            return None
        limit = int(limit_text)
        if limit >= _NO_LIMIT:
            return None
        usage = int((directory / usage_file).read_text().strip())
    except (OSError, ValueError):
        return None
    return limit - usage + _stat(directory / "memory.stat", cache_key)


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


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


def state_floats(c: ModelConfig) -> int:
    """Floats of one sequence's recurrent state: (L, H) once, twice for an LSTM's (h, c)."""
    return (2 if c.cell == "lstm" else 1) * c.num_layers * c.hidden_size


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
    """Bytes to train `model` on (batch_size, bptt) windows with `optimizer` (as `training.trainer.make_optimizer`
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
    states = FLOAT * 4 * state_floats(c)  # the first segment's, the warmed ones, their concatenation, the result
    warm = FLOAT * INFERENCE_FLOATS * warmup * c.hidden_size
    scores = FLOAT * LOGIT_COPIES * max(LOGIT_BUDGET, streams * c.vocab_size)
    return streams * (ids + states + warm) + scores


def dynamic_bytes(c: ModelConfig, segment: int) -> int:
    """What dynamic evaluation (`charlm.evaluation.dynamic`) adds to the loaded model: the adapted copy, its gradients,
    one segment's training activations and the scores of both models."""
    p = parameter_count(c)
    return 2 * FLOAT * p + window_bytes(c, 1, segment) + FLOAT * LOGIT_COPIES * segment * c.vocab_size


def decoding_bytes(sequences: int, length: int, vocab: int, state: int, token_bytes: int) -> int:
    """What a whole-result decoding (`charlm.sampling.generate`) holds for `sequences` rows (samples, or beam
    slots) of up to `length` tokens: their history (`token_bytes` per token and row), each step's scores
    (DECODE_LOGIT_COPIES x vocab) and states (`state` floats a row)."""
    return sequences * (length * token_bytes + FLOAT * (DECODE_LOGIT_COPIES * vocab + 3 * state))


def gib(n: float) -> str:
    """Bytes for messages: MiB below one GiB, then GiB, TiB, PiB, EiB."""
    if n < 2**30:
        return f"{n / 2**20:.0f} MiB"
    for unit in ("GiB", "TiB", "PiB"):
        n /= 2**30 if unit == "GiB" else 2**10
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 2**10:.1f} EiB"


def where(device: torch.device | str) -> str:
    device = torch.device(device)
    return f"on {device}" if device.type == "cuda" else "here"


def require(need: int, device: torch.device | str, doing: str, fix: str, detail: str = "") -> None:
    """Raise a one-line ConfigError when `need` bytes are above MARGIN (90%) of what `device` has available.

    doing: what needs it ("training a 2x512 LSTM"); detail: what the figure counts;
    fix: the options to change ("use a smaller --hidden").
    """
    available = available_bytes(device)
    if need <= MARGIN * available:
        return
    counted = f" ({detail})" if detail else ""
    raise ConfigError(
        f"{doing} needs about {gib(need)}{counted}, more than the {gib(available)} available {where(device)}; {fix}"
    )


def check_training(config: TrainConfig, vocab_size: int, device: torch.device | str, world: int = 1) -> None:
    """Refuse a training run whose model, window or validation cannot fit on `device`, before anything is built.

    `charlm.training.trainer` calls it before charlm.training.autosize (which measures an explicit
    --hidden by training a few steps of it) and again once every option is
    chosen. Options still open count as autosize will choose them (the default
    batch) or are left out (an open width: autosize tries small widths first;
    open adaptive-softmax clusters: their scores). Validation scores at most
    eval_tokens tokens, so no more than eval_tokens / warm-up streams. A CPU job
    of `world` processes needs `world` times as much of the one host.
    """
    device = torch.device(device)
    c = config.with_level_defaults()
    if c.hidden_size is None or c.bptt is None:
        return
    shape = c.model_config(vocab_size, check_only=True)
    if c.adaptive_softmax and c.adaptive_cutoffs is not None:
        shape = replace(shape, adaptive_cutoffs=c.adaptive_cutoffs)
    batch = c.batch_size or default_batch(device.type)
    scored = c.adaptive_softmax is False or c.adaptive_cutoffs is not None or c.level != "word"
    streams = min(c.eval_streams, max(1, c.eval_tokens // DEFAULT_WARMUP)) if c.eval_tokens else c.eval_streams
    need = training_need(shape, batch, c.bptt, c.optimizer, c.momentum, streams, scored)
    processes = world if device.type != "cuda" else 1
    state = {"adamw": "AdamW state", "sgd": "SGD momentum" if c.momentum > 0 else ""}[c.optimizer]
    counted = ", ".join(x for x in ("weights", "gradients", state) if x)
    what = f"one {batch}x{c.bptt} window" if need.window >= need.validation else f"validation on {streams:,} streams"
    each = f", for each of {processes} processes" if processes > 1 else ""
    require(
        processes * need.total,
        device,
        f"training a {c.num_layers}x{c.hidden_size} {c.cell.upper()}",
        _training_fix(need, shape, c.level),
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
