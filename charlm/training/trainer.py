"""The truncated-BPTT trainer: from text files to a resumable checkpoint directory.

    train(config)
      ├─ prepare_data      read and split the text, fit the tokenizer on the training part only, encode
      ├─ Trainer           model, optimiser, RunState (restored on --resume), RunWriter (the directory)
      └─ Trainer.run()     while no stop_reason():  train_step()  ->  log()  ->  validate_and_save()

One step reads a window of `bptt` steps across `batch_size` parallel streams,
carrying the recurrent state from window to window and detaching it at each
edge. Validation runs every `eval_interval` steps and at the end; `best` keeps
the lowest validation loss, `last` everything needed to resume exactly where
the run stopped. Nothing is lost: see `charlm.checkpoint.store.RunWriter`.

Repeatability: with the same seed, a CPU run whose schedule is driven by steps
or epochs gives the same losses every time, and a run stopped and resumed gives
the same losses as one that never stopped. A `time_budget` drives the learning
rate by elapsed wall-clock time, which is repeatable only as far as the
machine's speed is.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from charlm.checkpoint import store as ckpt
from charlm.data import Tokenizer, batchify, epoch_offset, get_batch, num_windows, tokcache, window_length
from charlm.errors import CheckpointError, ConfigError, DivergedError
from charlm.evaluation import context_id, evaluate_ids
from charlm.models import RNNLanguageModel, State, detach_state
from charlm.runtime import (
    DistContext,
    autocast,
    cpu_bf16_candidate,
    resolve_device,
    resolve_precision,
    retain_freed_memory,
)
from charlm.sampling import DecodingOptions, generate
from charlm.training import autosize, baselines, memory
from charlm.training.config import (  # noqa: F401 - re-exported: the trainer's public names
    DEFAULT_TIME_BUDGET,
    LEVELS,
    OPTIMIZERS,
    RESUMABLE,
    SCHEDULES,
    TrainConfig,
    resumed_config,
)

# Above this share of validation tokens outside the vocabulary, the start-up lines warn.
OOV_WARN_RATE = {"char": 0.01, "word": 0.05}
# The default warm-up: this share of the run (by its first limit).
WARMUP_FRACTION = 0.02
# Tokens of the sample generated at each validation, by level (`sample_length` None).
SAMPLE_LENGTH = {"char": 200, "subword": 60, "word": 40}


# ---------------------------------------------------------------- the run's state
@dataclass
class RunState:
    """The counters of a run: everything besides tensors that a resume restores (last.safetensors' metadata)."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # column of the training rows where the next window starts, in the current epoch
    elapsed: float = 0.0  # seconds of training so far, all sessions together
    tokens: int = 0
    best_valid: float | None = None
    last_valid: float | None = None
    last_eval_step: int | None = None
    bad_evals: int = 0  # validations without improvement (early stopping)
    plateau_bad: int = 0
    plateau_scale: float = 1.0
    fingerprint: str = ""  # the training text's
    valid_fingerprint: str = ""  # the validation text's
    precision: str = ""  # what the run trains in (fp32, bf16, fp16): a resume under --precision auto keeps it
    best_step: int | None = None  # the step of the best validation (the `best` checkpoint's)
    evals: int = 0  # validations so far
    baselines: dict[str, Any] | None = (
        None  # charlm.training.baselines.compute's record: measured once, kept for a resume
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        """From a checkpoint's trainer metadata; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def record_validation(state: RunState, loss: float, config: TrainConfig) -> tuple[bool, bool]:
    """Update best, early-stopping and plateau counters for one validation: (improved, stop early)."""
    state.last_valid, state.evals = loss, state.evals + 1
    improved = state.best_valid is None or loss < state.best_valid
    if improved:
        state.best_valid, state.best_step, state.bad_evals, state.plateau_bad = loss, state.step, 0, 0
    else:
        state.bad_evals += 1
        state.plateau_bad += 1
        if config.schedule == "plateau" and state.plateau_bad > config.plateau_patience:
            state.plateau_scale *= config.plateau_factor
            state.plateau_bad = 0
    return improved, config.patience is not None and state.bad_evals >= config.patience


# ---------------------------------------------------------------- observing
class TrainObserver(Protocol):
    """What the trainer tells a front end (the CLI's progress display, a test)."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_log(self, record: dict[str, Any]) -> None: ...
    def on_eval(self, record: dict[str, Any]) -> None: ...
    def on_end(self, summary: dict[str, Any]) -> None: ...


class SilentObserver:
    """Hears everything, shows nothing (library use, non-zero ranks)."""

    def on_start(self, info: dict[str, Any]) -> None:
        pass

    def on_log(self, record: dict[str, Any]) -> None:
        pass

    def on_eval(self, record: dict[str, Any]) -> None:
        pass

    def on_end(self, summary: dict[str, Any]) -> None:
        pass


@dataclass
class TrainResult:
    """How a run ended and where it left its checkpoint."""

    out: Path
    status: str  # "time budget" | "max steps" | "epochs" | "early stop" | "overfitting" | "interrupted"
    step: int
    epoch: int
    best_valid_loss: float | None
    last_valid_loss: float | None
    train_loss: float | None
    elapsed: float
    tokens_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None  # the step a resumed run started at
    signal: str | None = None  # SIGINT, SIGTERM or SIGHUP when one stopped the run
    best_step: int | None = None
    baselines: dict[str, Any] | None = None  # charlm.training.baselines.compute's record, None when turned off
    notes: list[str] = field(default_factory=list)  # what the user should hear at the end (worse than KN)


# ---------------------------------------------------------------- small parts
def lr_factor(config: TrainConfig, step: int, progress: float, plateau_scale: float) -> float:
    """Multiplier of the base learning rate: linear warm-up, then the chosen decay.

    progress in [0, 1] is how far the run is towards its first limit (steps,
    epochs or time budget); cosine and linear decay to min_lr_ratio at 1. The
    warm-up is `warmup_steps` long, or (None) WARMUP_FRACTION of the run, so a
    one-minute run on a slow CPU does not spend itself warming up.
    """
    if config.warmup_steps is None:  # follows the run: from a tenth of the peak, at the peak 2% of the way in
        warm = min(1.0, 0.1 + 0.9 * progress / WARMUP_FRACTION)
    else:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    p = min(max(progress, 0.0), 1.0)
    lo = config.min_lr_ratio
    if config.schedule == "cosine":
        decay = lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * p))
    elif config.schedule == "linear":
        decay = lo + (1 - lo) * (1 - p)
    elif config.schedule == "plateau":
        decay = plateau_scale
    else:
        decay = 1.0
    return warm * decay


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    assert config.lr is not None, "resolve the options first (charlm.training.autosize.resolve)"
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    # fused: one kernel over all the tensors (CPU and CUDA) instead of a dozen passes over
    # each: 12 ms instead of 66 ms a step for the 16M parameters of a 2x650 word model
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def make_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """Loss scaling for fp16 autocast, whose gradients would underflow; bf16 and fp32 need none."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


@dataclass(frozen=True)
class Limits:
    """When a run stops: steps, passes over the data, or seconds, whichever comes first."""

    epochs: float | None
    max_steps: int | None
    time_budget: float | None
    columns: int  # targets per row: an epoch is done when a window reaches the last column

    def progress(self, state: RunState, seconds: float) -> float:
        """How far the run is towards its first limit, in [0, 1] (what the learning-rate decay follows)."""
        p = 0.0
        if self.max_steps:
            p = max(p, state.step / self.max_steps)
        if self.epochs:
            p = max(p, (state.epoch + state.pos / self.columns) / self.epochs)
        if self.time_budget:
            p = max(p, seconds / self.time_budget)
        return min(p, 1.0)

    def reached(self, state: RunState) -> str | None:
        """The count limit the run has reached (steps or epochs), or None; time is checked separately."""
        if self.max_steps is not None and state.step >= self.max_steps:
            return "max steps"
        if self.epochs is not None and state.epoch + state.pos / self.columns >= self.epochs:
            return "epochs"
        return None

    def out_of_time(self, seconds: float) -> bool:
        return self.time_budget is not None and seconds >= self.time_budget


class LossMeter:
    """Token-weighted training loss since the last log, summed on the device: no host sync per step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sum = torch.zeros((), device=self.device)
        self.tokens = 0

    def add(self, loss: torch.Tensor, tokens: int) -> None:
        self.sum += loss.detach() * tokens
        self.tokens += tokens

    def take(self, dctx: DistContext) -> float | None:
        """The mean since the last take, over all processes (one host sync), or None if nothing was added."""
        if self.tokens == 0:
            return None
        total, count = dctx.all_sum([float(self.sum), float(self.tokens)], self.device)
        self.reset()
        return total / count


class StopSignals:
    """The first SIGINT, SIGTERM or SIGHUP asks the loop to save and stop at the next step; a second interrupts at once.

    A job scheduler's SIGTERM and a closed terminal's SIGHUP save like Ctrl-C does.
    """

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def activation_regularisation(dropped: torch.Tensor, raw: torch.Tensor, ar: float, tar: float) -> torch.Tensor:
    """AWD-LSTM's AR and TAR: ar * mean(dropped^2) + tar * mean((raw_t - raw_t-1)^2).

    dropped, raw: (B, T, H), the last layer's output after and before its dropout.
    AR keeps activations small; TAR keeps the raw state from jumping between steps.
    """
    penalty = torch.zeros((), device=raw.device)
    if ar:
        penalty = penalty + ar * dropped.float().pow(2).mean()
    if tar:
        penalty = penalty + tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    return penalty


def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    x: torch.Tensor,
    y: torch.Tensor,
    hidden: State | None,
    config: TrainConfig,
    amp_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, State]:
    """One truncated-BPTT step, the hot path: forward a window from the carried state, backward, clip, update.

    x, y: (B, T). Returns the window's mean loss (detached, still on the device: no
    host sync) and the state after the window, detached (the window edge).
    """
    with autocast(x.device, amp_dtype):
        # the model computes the loss (an adaptive softmax scores only what it must): (), state, (B, T, H) x 2
        out = net(x, hidden, with_activations=True, targets=y)
        loss, hidden, (dropped, raw) = out.loss, out.state, out.activations
        objective = loss + activation_regularisation(dropped, raw, config.ar or 0.0, config.tar or 0.0)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(objective).backward()
        scaler.unscale_(optimizer)
    else:
        objective.backward()
    if config.clip > 0:
        torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], config.clip, foreach=True
        )
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach(), detach_state(hidden)  # cut the graph at the window edge, keep the values


# ---------------------------------------------------------------- preparing a run
@dataclass
class PreparedData:
    """A run's training and validation ids (memory maps of the token cache) and what they were made with."""

    tokenizer: Tokenizer
    train_ids: np.ndarray  # (N,) in the tokenizer's smallest dtype, on disk
    valid_ids: np.ndarray  # (M,)
    valid_chars: int
    valid_bytes: int
    valid_oov: int
    fingerprint: str
    valid_fingerprint: str
    cache: Path  # the cache entry
    reused: bool  # nothing had to be tokenized
    _counts: np.ndarray | None = field(default=None, repr=False, compare=False)

    def score_validation(self, model: Any, eval_tokens: int, **scoring: Any) -> Any:
        """`model`'s figures on the validation ids (a `TextScore`), by validation's rules: the text's own
        counts, read after the tokenizer's context, at most `eval_tokens` tokens (0: all). Training's
        validation, the baselines and the n-gram trainer all score here, so their figures compare."""
        return evaluate_ids(
            model,
            self.valid_ids,
            context_id(self.tokenizer),
            chars=self.valid_chars,
            nbytes=self.valid_bytes,
            oov=self.valid_oov,
            max_tokens=eval_tokens or None,
            **scoring,
        )

    def unigram_counts(self) -> np.ndarray:
        """How often each id occurs in the training ids (V,) int64, counted once per run: the whole
        text, or 16 evenly spread stretches of it beyond 16M tokens (bounded start-up for a corpus
        bigger than memory). The adaptive softmax's clusters and the output layer's start use it."""
        if self._counts is None:
            ids, vocab, most = self.train_ids, self.tokenizer.vocab_size, 1 << 24
            if len(ids) <= most:
                self._counts = token_counts(ids, vocab)
            else:
                span = most // 16
                starts = np.linspace(0, len(ids) - span, 16).astype(np.int64)
                self._counts = sum((token_counts(ids[a : a + span], vocab) for a in starts), np.zeros(vocab, np.int64))
        return self._counts


def cache_dir(config: TrainConfig) -> Path:
    """--cache-dir, else $CHARLM_CACHE_DIR, else the user's cache (~/.cache/charlm/tokens)."""
    return Path(config.cache_dir or os.environ.get("CHARLM_CACHE_DIR") or tokcache.default_cache_dir())


def prepare_data(
    config: TrainConfig, tokenizer: Tokenizer | None = None, progress: tokcache.Progress | None = None
) -> PreparedData:
    """The ids of the run's corpus from the token cache, tokenized into it the first time.

    The tokenizer is fitted on the training part only (unless given: a resumed
    run's), the split and the cache are `charlm.data.tokcache`'s, and the run's own
    output directory is never read as corpus.
    """
    tc = tokcache.tokenized_corpus(
        config.corpus,
        valid=config.valid,
        valid_fraction=config.valid_fraction,
        level=config.level,
        tokenizer_options=config.tokenizer_options(),
        tokenizer=tokenizer,
        encoding_errors=config.encoding_errors,
        cache_dir=cache_dir(config),
        exclude=[config.out_dir],
        progress=progress,
    )
    return PreparedData(
        tc.tokenizer, tc.train, tc.valid, tc.valid_chars, tc.valid_bytes, tc.valid_oov,
        tc.fingerprint, tc.valid_fingerprint, tc.path, tc.reused,
    )  # fmt: skip


def sample_prompt(text: str, limit: int = 40) -> str:
    """The start of the first non-empty line of `text`: at most `limit` characters, cut after a space."""
    line = next((ln for ln in text.split("\n") if ln.strip()), "")
    if len(line) <= limit:
        return line
    cut = line.rfind(" ", 0, limit)
    return line[: cut + 1] if cut > 0 else line[:limit]


def _check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a directory the run may not use; changes nothing on disk."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; choose one")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory")
    if resume and not ckpt.is_checkpoint_dir(out):
        raise CheckpointError(f"nothing to resume in {out}: no checkpoint there; drop --resume to start a new run")
    if not resume and not overwrite and ckpt.holds_run(out):
        raise CheckpointError(
            f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, or --out DIR"
        )


def check_fits(config: TrainConfig, data: PreparedData, world: int = 1) -> None:
    """Refuse a training text too short for one window of every stream (of every process)."""
    assert config.batch_size is not None and config.bptt is not None
    need = world * config.batch_size * (config.bptt + 1)
    if len(data.train_ids) < need:
        raise ConfigError(
            f"the training text has {len(data.train_ids)} tokens, fewer than one window needs "
            f"(batch size {config.batch_size} x (bptt {config.bptt} + 1) = {need // world}"
            f"{f' per process, {world} processes' if world > 1 else ''}); "
            "use a longer corpus or smaller --batch-size/--bptt"
        )


# measure_speed times steps until this many seconds have passed (or MEASURE_MAX_STEPS): a small model's
# step takes milliseconds, and two of them gave a speed 38x too low on one machine (issue 21).
MEASURE_SECONDS = 0.25
MEASURE_MAX_STEPS = 16


def measure_speed(config: TrainConfig, vocab: int, device: torch.device, steps: int = 2) -> float:
    """Training tokens per second of `config`'s model here (in its precision): one warm-up step, then at
    least `steps` timed ones on random ids, more for a small model (MEASURE_SECONDS); the median step counts.

    The global random state is left as it was, so measuring changes no run.
    """
    assert config.batch_size is not None and config.bptt is not None
    amp_dtype = resolve_precision(config.precision, device, config.cell)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = RNNLanguageModel(config.model_config(vocab)).to(device)
        optimizer = make_optimizer(config, model)
        # ids drawn as word frequencies fall (Zipf: p ~ 1/rank; ids are frequency-ordered), so an
        # adaptive softmax meets as many tail targets as on real text; other layers cost the same for any ids
        zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
        x = torch.multinomial(zipf, config.batch_size * config.bptt, replacement=True)
        x = x.view(config.batch_size, config.bptt).to(device)
        loss, hidden = train_step(model, optimizer, None, x, x, None, config, amp_dtype)
        float(loss)  # waits for the device
        times: list[float] = []
        while len(times) < steps or (sum(times) < MEASURE_SECONDS and len(times) < MEASURE_MAX_STEPS):
            t0 = time.perf_counter()
            loss, hidden = train_step(model, optimizer, None, x, x, hidden, config, amp_dtype)
            float(loss)
            times.append(time.perf_counter() - t0)
        return x.numel() / statistics.median(times)


def learning_losses(
    config: TrainConfig, ids: np.ndarray, vocab: int, device: torch.device, steps: int, precisions: tuple[str, ...]
) -> dict[str, list[float]]:
    """Training losses of `steps` steps of `config`'s model in each precision, from the same start on the same text.

    The model is built once per precision from the same seed and trained on the
    first windows of `ids` (the run's training text) without dropout, the rate
    rising from a tenth of the peak as a run's warm-up does: any difference
    between the precisions' losses comes from the precision alone. The global
    random state is left as it was.
    """
    assert config.batch_size is not None and config.bptt is not None and config.lr is not None
    peak = config.lr
    trial = replace(config, dropout=0.0, dropout_input=0.0, dropout_embed=0.0, weight_drop=0.0, ar=0.0, tar=0.0)
    need = config.batch_size * (config.bptt * steps + 1)
    rows = batchify(np.asarray(ids[: min(len(ids), need)]).astype(np.int64), config.batch_size)
    windows = max(1, num_windows(rows, config.bptt))
    losses: dict[str, list[float]] = {}
    for precision in precisions:
        amp_dtype = resolve_precision(precision, device, config.cell)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            model = RNNLanguageModel(trial.model_config(vocab)).to(device)
            optimizer = make_optimizer(trial, model)
            hidden: State | None = None
            run = []
            for step in range(steps):
                for g in optimizer.param_groups:
                    g["lr"] = peak * (0.1 + 0.9 * step / max(1, steps - 1))
                x, y = get_batch(rows, (step % windows) * config.bptt, config.bptt)
                loss, hidden = train_step(model, optimizer, None, x.to(device), y.to(device), hidden, trial, amp_dtype)
                run.append(loss)
            losses[precision] = [float(v) for v in torch.stack(run).cpu()]
    return losses


def token_counts(ids: np.ndarray, vocab: int, chunk: int = 1 << 24) -> np.ndarray:
    """How often each id occurs (V,) int64, counted a chunk at a time: a memory-mapped corpus is never
    widened whole (np.bincount would make an int64 copy of it)."""
    counts = np.zeros(vocab, dtype=np.int64)
    for i in range(0, len(ids), chunk):
        counts += np.bincount(np.asarray(ids[i : i + chunk]), minlength=vocab)[:vocab]
    return counts


MIN_STEPS_TO_MEASURE = 300  # a run limited to fewer steps trains in fp32 under --precision auto on a CPU


def valid_figures(score: Any) -> dict[str, Any]:
    """A validation record's figures from a `TextScore` (any model kind)."""
    return {
        "valid_loss": score.loss,
        "valid_ppl": math.exp(min(score.loss, 700.0)),
        "valid_bpc": score.bits_per_char,
        "valid_bpb": score.bits_per_byte,
        "valid_tokens": score.tokens,
        "valid_oov": score.oov,
    }


def validation_sample(
    model: Any, tok: Tokenizer, valid_ids: np.ndarray, config: TrainConfig, device: torch.device
) -> dict[str, str] | None:
    """A short continuation of the validation text's first line, as char-rnn users watch a model learn.

    Drawn at temperature 0.8 from a generator seeded with the run's seed, so samples
    of successive validations (and of any model kind) are comparable and training's
    random state is untouched.
    """
    length = SAMPLE_LENGTH.get(tok.kind, 60) if config.sample_length is None else config.sample_length
    if length == 0:
        return None
    prompt = sample_prompt(tok.decode(np.asarray(valid_ids[:200]).tolist()))
    options = DecodingOptions(max_new_tokens=length, temperature=0.8, lines=length if tok.eos_id is not None else None)
    [result] = generate(model, tok, prompt, options, torch.Generator(device).manual_seed(config.seed))
    return {"prompt": prompt, "text": result.text}


def precision_name(amp_dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]


def _choose(
    config: TrainConfig, data: PreparedData, device: torch.device, dctx: DistContext, kept: str | None = None
) -> tuple[TrainConfig, str, float, torch.dtype | None]:
    """The options left to charlm and the precision, chosen on rank 0 and shared.

    Returns (config, why, seconds spent measuring, autocast dtype). `kept`: on a
    resume, the precision the run trained in; under `--precision auto` the run
    keeps bf16 where this machine can run it (no new measurement, so a resume on
    the same machine continues exactly), and trains in fp32 where it cannot.
    """
    _, max_steps, _ = config.limits
    bf16 = (
        config.precision == "auto"
        and device.type == "cpu"
        and (max_steps is None or max_steps >= MIN_STEPS_TO_MEASURE)  # measuring costs ~6 steps: a short run
        and cpu_bf16_candidate(config.cell)  # would not earn them back, and starts at once in fp32
    )
    if kept is not None:
        name = "bf16" if bf16 and kept == "bf16" else config.precision
        return config, "", 0.0, resolve_precision(name, device, config.cell)
    config = config.with_level_defaults()
    layer_open = config.adaptive_softmax is not False and config.adaptive_cutoffs is None
    if config.resolved and not bf16 and not layer_open:
        return config, "", 0.0, resolve_precision(config.precision, device, config.cell)

    def on_main() -> bytes:
        vocab = data.tokenizer.vocab_size
        c, layer_why = config, ""
        if layer_open:  # the output layer's clusters follow the ids' frequencies (V,)
            c, layer_why = autosize.output_layer(config, data.unigram_counts())
        choice = autosize.resolve(
            c,
            len(data.train_ids) // dctx.world,
            device.type,
            lambda c: measure_speed(c, vocab, device),
            bf16,
            valid_tokens=len(data.valid_ids),
            learns=lambda c: learning_losses(
                c, data.train_ids, vocab, device, autosize.BF16_CHECK_STEPS, ("fp32", "bf16")
            ),
        )
        why = "; ".join(w for w in (choice.reason, layer_why) if w)
        return json.dumps(
            {"config": choice.config.to_dict(), "why": why, "seconds": choice.seconds,
             "precision": choice.precision or config.precision}
        ).encode()  # fmt: skip

    chosen = json.loads(dctx.share_from_main(on_main, device))
    config = TrainConfig.from_dict(chosen["config"])
    return config, chosen["why"], chosen["seconds"], resolve_precision(chosen["precision"], device, config.cell)


def _shared_data(
    config: TrainConfig, dctx: DistContext, device: torch.device, tokenizer: Tokenizer | None, progress: Any
) -> PreparedData:
    """The run's data; in a torchrun job rank 0 tokenizes (and fits) first, then the others open its cache entry."""
    if not dctx.active:
        return prepare_data(config, tokenizer, progress)
    built: list[PreparedData] = []

    def on_main() -> bytes:
        built.append(prepare_data(config, tokenizer, progress))
        return b""

    dctx.share_from_main(on_main, device)  # every rank raises rank 0's error, if any
    return built[0] if built else prepare_data(config, tokenizer)


# ---------------------------------------------------------------- the trainer
def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    observer: TrainObserver | None = None,
    stop_after: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Train (or resume) a run and return how it ended.

    With resume=True the run keeps its stored options except those `config` sets
    to non-default values that a resume may change (`config.resumed_config`).
    `stop_after(step)` lets a caller stop the run as Ctrl-C would (tests use it).
    Raises `CharlmError` subclasses for bad input, `DivergedError` when the loss
    becomes non-finite or explodes (the checkpoint on disk is left as it was).
    """
    if config.model == "kn":  # an n-gram model is estimated, not trained: see charlm.training.ngram_task
        return _train_ngram(config, resume, overwrite, observer)
    dctx = DistContext.from_env()
    out = config.out_dir
    if dctx.is_main:  # in a torchrun job rank 0 alone checks and writes the directory
        _check_out_dir(out, resume, overwrite)
    if resume:
        config = resumed_config(ckpt.open_checkpoint(out).train_config, config.explicit_options())
    device = resolve_device(config.device)
    resolve_precision(config.precision, device, config.cell)  # an impossible precision fails before any work
    device = dctx.setup(device)
    try:
        result = _train_session(config, resume, dctx, device, observer, stop_after)
    except BaseException as exc:
        if dctx.active:  # the traceback's frames hold the DDP wrapper, and so the process group: let them go
            traceback.clear_frames(exc.__traceback__)
        dctx.shutdown(clean=False)
        raise
    dctx.shutdown(clean=True)  # the session's frame, and with it the DDP wrapper, is gone by now
    return result


def _train_session(
    config: TrainConfig,
    resume: bool,
    dctx: DistContext,
    device: torch.device,
    observer: TrainObserver | None,
    stop_after: Callable[[int], bool] | None,
) -> TrainResult:
    """Prepare the data, choose what is left open, build the trainer and run it (every rank)."""
    out = config.out_dir
    progress = getattr(observer, "on_prepare", None) if dctx.is_main else None
    if not resume:  # every option is known good before anything is written
        data = _shared_data(config, dctx, device, None, progress)
        memory.check_training(config, data.tokenizer.vocab_size, device, dctx.world)  # autosize measures --hidden
        config, chosen, measuring, amp_dtype = _choose(config, data, device, dctx)
        check_fits(config, data, dctx.world)
        memory.check_training(config, data.tokenizer.vocab_size, device, dctx.world)
    with ckpt.RunWriter(out) if dctx.is_main else contextlib.nullcontext() as writer:
        if resume:  # read under the lock, after `RunWriter` finished what a killed run left
            info = ckpt.open_checkpoint(out)
            data = _shared_data(config, dctx, device, ckpt.open_tokenizer(info), progress)
            stored = (ckpt.weights_metadata(out, "last") or {}).get("trainer")
            kept = str(stored.get("precision") or "fp32") if isinstance(stored, dict) else "fp32"
            config, chosen, measuring, amp_dtype = _choose(config, data, device, dctx, kept)
        trainer = Trainer(config, data, device, amp_dtype, dctx, writer, observer if dctx.is_main else None)
        trainer.chosen = chosen
        if resume:
            trainer.restore(info)
        else:
            trainer.state.elapsed = measuring  # choosing the model is part of the budget
            # the output layer starts at the unigram distribution: the first steps learn context (measured:
            # a 2x650 word model's validation loss after 150 steps 5.83 against 6.25 from torch's init)
            trainer.model.init_output_bias(torch.from_numpy(data.unigram_counts()))
            if writer is not None:
                writer.begin(trainer.model.config, data.tokenizer, config.to_dict())
        trainer.measure_baselines()
        return trainer.run(stop_after)


def _train_ngram(config: TrainConfig, resume: bool, overwrite: bool, observer: TrainObserver | None) -> TrainResult:
    from charlm.training.ngram_task import train_ngram

    t0 = time.perf_counter()
    _, rec = train_ngram(config, resume=resume, overwrite=overwrite, observer=observer)
    loss, seconds = rec["valid_loss"], time.perf_counter() - t0
    return TrainResult(
        config.out_dir, "estimated", 0, 0, loss, loss, None, seconds, rec["train_tokens"] / seconds, [rec]
    )


class Trainer:
    """One training session: the model, its optimiser and data, and the loop over windows."""

    def __init__(
        self,
        config: TrainConfig,
        data: PreparedData,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        dctx: DistContext,
        writer: ckpt.RunWriter | None,
        observer: TrainObserver | None,
    ) -> None:
        self.config, self.data, self.device, self.amp_dtype, self.dctx, self.writer = (
            config,
            data,
            device,
            amp_dtype,
            dctx,
            writer,
        )
        self.obs = observer or SilentObserver()
        torch.manual_seed(config.seed)
        self.model = RNNLanguageModel(config.model_config(data.tokenizer.vocab_size)).to(device)
        self.optimizer = make_optimizer(config, self.model)
        self.scaler = make_scaler(amp_dtype, device)
        self.state = RunState(
            fingerprint=data.fingerprint, valid_fingerprint=data.valid_fingerprint, precision=precision_name(amp_dtype)
        )
        self.hidden: State | None = None
        self.resumed_from: int | None = None
        self.notes: list[str] = []
        self.warned: set[str] = set()  # the guards' warnings already given this session (each once)
        self._ending = False
        self.chosen = ""  # what charlm.training.autosize chose for options the user left open, and why
        self.history: list[dict[str, Any]] = []
        self.meter = LossMeter(device)
        self.eval_cost = 0.0  # seconds the last validation and save took: reserved before the budget ends
        self.train_loss: float | None = None
        self._session_start = time.perf_counter()
        self._elapsed_before = 0.0  # seconds earlier sessions of the run trained
        self._tokens_at_start = 0
        self._synced_elapsed = 0.0
        assert config.batch_size is not None and config.lr is not None, "resolve the options first"
        assert config.bptt is not None
        self.lr, self.bptt = config.lr, config.bptt
        shard = tokcache.shard(data.train_ids, dctx.rank, dctx.world)  # this rank's part: a view, no copy
        self.train_rows = batchify(shard, config.batch_size)  # (B, L), still on disk
        epochs, max_steps, budget = config.limits
        self.limits = Limits(epochs, max_steps, budget, self.train_rows.shape[1] - 1)
        self.explode_at = 3.0 * math.log(data.tokenizer.vocab_size) + 1.0

    # ------------------------------------------------------------ restore
    def restore(self, info: ckpt.CheckpointInfo) -> None:
        """Continue a run from last.safetensors: weights, optimiser, RNG, scaler, carried state and counters."""
        out = info.path
        tensors, saved = ckpt.load_training_state(out)
        if "rng/cpu" not in tensors or not isinstance(saved.get("trainer"), dict):
            raise CheckpointError(
                f"{out / ckpt.LAST} lacks the training state a resume needs; the checkpoint is corrupt"
            )
        if saved["trainer"].get("fingerprint") != self.data.fingerprint:
            raise CheckpointError(
                f"the training text differs from the one {out} was trained on; "
                "resume with the same corpus or start a new run"
            )
        ckpt.load_model_tensors(self.model, tensors, out / ckpt.LAST)
        try:  # the optimiser's tensors go where load_state_dict puts them (AdamW keeps `step` on the CPU)
            ckpt.optimizer_from_flat(self.optimizer, tensors, saved["optimizer"])
            torch.set_rng_state(tensors["rng/cpu"])
            if self.scaler is not None and saved["trainer"].get("scaler"):
                self.scaler.load_state_dict(saved["trainer"]["scaler"])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(
                f"{out / ckpt.LAST} has an unusable optimiser or RNG state ({type(exc).__name__}); "
                "the checkpoint is corrupt"
            ) from None
        if self.device.type == "cuda" and "rng/cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
        carry = [tensors[f"carry/{i}"] for i in range(self.model.num_state_tensors) if f"carry/{i}" in tensors]
        self.hidden = tuple(t.to(self.device, torch.float32) for t in carry) if carry else None
        self.state = RunState.from_dict(saved["trainer"] | {"precision": precision_name(self.amp_dtype)})
        self.resumed_from = self.state.step
        self._reconcile_best(ckpt.weights_metadata(out, "best"))
        if self.dctx.active:
            # Ranks share the weights (DDP broadcasts rank 0's) but not dropout masks. A resumed
            # multi-process run restarts the carried state from zero: the checkpoint holds rank 0's only.
            torch.manual_seed(self.config.seed + 7919 * (self.dctx.rank + 1) + self.state.step)
            self.hidden = None
        if self.writer is not None:
            ckpt.truncate_metrics(out, self.state.step)
            self.writer.continue_run(info, self.config.to_dict())

    def _reconcile_best(self, best_meta: dict[str, Any] | None) -> None:
        """A kill between writing best and last leaves best ahead of last's record: trust the lower loss.

        If the validation text changed, losses are not comparable: best is chosen again.
        """
        s = self.state
        if s.valid_fingerprint and s.valid_fingerprint != self.data.valid_fingerprint:
            s.best_valid, s.last_valid, s.bad_evals, s.plateau_bad = None, None, 0, 0
            s.best_step, s.baselines = None, None  # the baselines are scored again on the new text
            self.notes.append(
                "the validation text differs from the run's: best is chosen again from the next validation on it"
            )
        elif best_meta and best_meta.get("valid_fingerprint") == s.valid_fingerprint:
            kept = best_meta.get("valid_loss")
            if kept is not None and (s.best_valid is None or kept < s.best_valid):
                s.best_valid, s.best_step = kept, best_meta.get("step", s.best_step)
        s.valid_fingerprint = self.data.valid_fingerprint

    # ------------------------------------------------------------ the loop
    def run(self, stop_after: Callable[[int], bool] | None = None) -> TrainResult:
        self.net = self.dctx.wrap(self.model, self.device)
        self._session_start, self._elapsed_before, self._tokens_at_start = (
            time.perf_counter(),
            self.state.elapsed,
            self.state.tokens,
        )
        self.obs.on_start(self.start_info())
        self.model.train()
        if self.device.type == "cpu":  # training's blocks; generation and perplexity keep glibc's defaults
            retain_freed_memory()
        with StopSignals() as signals:
            while not (status := self.stop_reason(signals, stop_after)):
                x, y = self.next_batch()  # (B, T) x 2
                self.set_lr(x.size(1))
                loss, self.hidden = train_step(
                    self.net, self.optimizer, self.scaler, x, y, self.hidden, self.config, self.amp_dtype
                )
                self.advance(loss, y.numel(), x.size(1))
                if self.state.step % self.config.log_interval == 0:
                    self.log()
                if self.state.step % self.config.eval_interval == 0 and (stop := self.validate_and_save()):
                    status = stop
                    break
            self.finish(status)
        return self.result(status, signals.received)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next window of the training rows, widened to int64 on the device: inputs and targets (B, T)."""
        c = self.config
        length = window_length(c.seed, self.state.step, self.bptt, c.bptt_jitter)
        x, y = get_batch(self.train_rows, self.state.pos, length)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def advance(self, loss: torch.Tensor, tokens: int, length: int) -> None:
        """Count a step; at the end of a pass over the streams the next epoch starts from the zero state,
        at a column shifted by a random offset (`data.epoch_offset`)."""
        s = self.state
        self.meter.add(loss, tokens)
        s.step, s.pos, s.tokens = s.step + 1, s.pos + length, s.tokens + tokens
        if s.pos >= self.limits.columns:
            s.epoch, self.hidden = s.epoch + 1, None
            s.pos = epoch_offset(self.config.seed, s.epoch, self.bptt)

    def stop_reason(self, signals: StopSignals, stop_after: Callable[[int], bool] | None) -> str | None:
        """Why the run stops before the next step, or None. In a torchrun job the ranks agree at log intervals."""
        s = self.state
        reached = self.limits.reached(s)
        if reached:
            return reached
        out_of_time = self.limits.out_of_time(self.elapsed() + self.eval_cost)
        asked = bool(signals.received) or (stop_after is not None and stop_after(s.step))
        if self.dctx.active:  # no step waits on a collective for this
            if s.step % self.config.log_interval:
                return None
            t, a, self._synced_elapsed = self.dctx.all_max(
                [float(out_of_time), float(asked), self.elapsed()], self.device
            )
            out_of_time, asked = bool(t), bool(a)
        return "time budget" if out_of_time else "interrupted" if asked else None

    def set_lr(self, length: int) -> None:
        """The learning rate of the next step; a window shorter or longer than bptt scales it (AWD-LSTM)."""
        seconds = self._synced_elapsed if self.dctx.active else self.elapsed()
        progress = self.limits.progress(self.state, seconds)
        scale = length / self.bptt if self.config.bptt_jitter else 1.0
        lr = self.lr * scale * lr_factor(self.config, self.state.step, progress, self.state.plateau_scale)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def elapsed(self) -> float:
        """Training time of the run, earlier sessions included."""
        return self._elapsed_before + (time.perf_counter() - self._session_start)

    def finish(self, status: str) -> None:
        """The end of a session: the last log, then a final validation, or only a quick save when interrupted."""
        self.log()
        self._ending = True  # the last validation: the guards may still warn, but there is nothing left to stop
        if self.state.last_eval_step == self.state.step:
            return
        if status == "interrupted":
            if self.writer is not None:
                self.save(best=None, records=[])  # quick: no validation on Ctrl-C
        else:
            self.validate_and_save()

    # ------------------------------------------------------------ reporting and saving
    def log(self) -> None:
        """Record the training loss since the last log (the one host sync per log interval)."""
        value = self.meter.take(self.dctx)
        if value is None:
            return
        self.check_finite(value, "training")
        self.train_loss = value
        s = self.state
        budget = self.limits.time_budget
        rec = {
            "type": "train",
            "step": s.step,
            "epoch": s.epoch,
            "loss": value,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens_per_s": (s.tokens - self._tokens_at_start) / max(time.perf_counter() - self._session_start, 1e-9),
            "elapsed": round(self.elapsed(), 3),
            "time_left": None if budget is None else max(0.0, budget - self.elapsed()),
            "progress": self.limits.progress(s, self.elapsed()),
        }
        if self.writer is not None:
            self.writer.log([rec])
        self.history.append(rec)
        self.obs.on_log(rec)

    def validate_and_save(self) -> str | None:
        """Validate and save on rank 0, then share its decisions with every rank: why to stop early, or None."""
        self.state.last_eval_step = self.state.step  # on every rank: the end of the run asks whether to validate again
        if not self.dctx.active:
            return self._validate_and_save_main()

        def on_main() -> bytes:
            stop = self._validate_and_save_main()
            return json.dumps([stop, self.state.plateau_scale, self.eval_cost]).encode()

        stop, self.state.plateau_scale, self.eval_cost = json.loads(self.dctx.share_from_main(on_main, self.device))
        return str(stop) if stop else None

    def _validate_and_save_main(self) -> str | None:
        t0 = time.perf_counter()
        rec = self.validate()
        self.check_finite(rec["valid_loss"], "validation")
        improved, patience_out = record_validation(self.state, rec["valid_loss"], self.config)
        rec |= {"best_valid_loss": self.state.best_valid, "improved": improved}
        warnings, overfit_stop = self.guard(rec["valid_loss"])
        if warnings:
            rec["warnings"] = warnings
        best = {
            "step": self.state.step,
            "valid_loss": rec["valid_loss"],
            "valid_fingerprint": self.state.valid_fingerprint,
        }
        self.save(best=best if improved else None, records=[rec])
        self.eval_cost = time.perf_counter() - t0
        self.history.append(rec)
        self.obs.on_eval(rec)
        return "early stop" if patience_out else "overfitting" if overfit_stop else None

    def guard(self, loss: float) -> tuple[list[str], bool]:
        """The warnings one validation calls for (each given once a session), and whether overfitting stops the run.

        Not learning: a fair share into the run, no better than the unigram baseline.
        Overfitting: several validations since the best, the latest well above it
        (thresholds: charlm.training.baselines). The automatic stop is off when --patience is given.
        """
        s, out = self.state, []
        progress = self.limits.progress(s, self.elapsed())
        unigram = (s.baselines or {}).get("unigram")
        flat = unigram is not None and baselines.not_learning(loss, unigram["loss"], progress, s.evals)
        if flat and unigram and "unigram" not in self.warned:
            self.warned.add("unigram")
            out.append(
                f"after {100 * progress:.0f}% of the run the model is no better than a unigram model "
                f"(validation {loss:.3f} vs {unigram['loss']:.3f}): it is not learning; try a smaller --hidden, "
                "less regularisation (--dropout 0.1 --weight-drop 0), or a lower --lr"
            )
        assert s.best_valid is not None  # record_validation set it
        stop_allowed = self.config.patience is None and not self._ending
        verdict = baselines.overfit_verdict(s.bad_evals, loss, s.best_valid, stop_allowed)
        at = f" at step {s.best_step}" if s.best_step is not None else ""
        rose = (
            f"{s.bad_evals} validations since the best, validation is at {loss:.4f}, "
            f"{100 * (loss / s.best_valid - 1):.0f}% above its best {s.best_valid:.4f}{at}"
        )
        kept = f"best keeps the step-{s.best_step} checkpoint" if at else "best keeps the best checkpoint"
        if verdict == "notice" and "overfit" not in self.warned:
            self.warned.add("overfit")
            out.append(
                f"{rose}: the model is overfitting; {kept}. "
                "Try more --dropout, a shorter --time-budget or a longer text"
            )
        if verdict == "stop":
            out.append(f"{rose}: stopping, the rest of the run would only overfit; {kept} (--patience N: your rule)")
        return out, verdict == "stop"

    def measure_baselines(self) -> None:
        """Score the unigram and Kneser-Ney baselines once per run (rank 0; a resume shows the stored ones).

        Their seconds count against the run's budget, as choosing the model does."""
        if not self.config.baselines or self.state.baselines is not None:
            return

        def on_main() -> bytes:
            return json.dumps(baselines.compute(self.data, self.config)).encode()

        b = json.loads(self.dctx.share_from_main(on_main, self.device))
        self.state.baselines = b
        self.state.elapsed += b["seconds"]
        if self.writer is not None:  # metrics.jsonl's one "baselines" record; `history` keeps train and valid
            self.writer.log([{"type": "baselines", "step": self.state.step, **b}])

    def validate(self) -> dict[str, Any]:
        # The same function and defaults as `charlm perplexity`, so its figure on the
        # validation text reproduces the loss recorded here.
        score = self.data.score_validation(
            self.model, self.config.eval_tokens, streams=self.config.eval_streams, amp_dtype=self.amp_dtype
        )
        sample = self.sample()
        return (({"sample": sample}) if sample else {}) | {
            "type": "valid",
            "step": self.state.step,
            "epoch": self.state.epoch,
            **valid_figures(score),
            "elapsed": round(self.elapsed(), 3),
        }

    def sample(self) -> dict[str, str] | None:
        return validation_sample(self.model, self.data.tokenizer, self.data.valid_ids, self.config, self.device)

    def save(self, best: dict[str, Any] | None, records: list[dict[str, Any]]) -> None:
        """best (when improved), the records, then last: see `RunWriter.save`."""
        assert self.writer is not None
        extra = {"rng/cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            extra["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        if self.hidden is not None:  # stored in fp32 whatever autocast computed it in, so any device can resume it
            extra.update({f"carry/{i}": h.float() for i, h in enumerate(self.hidden)})
        self.state.elapsed = self.elapsed()
        trainer = self.state.to_dict() | ({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})
        self.writer.save(self.model, self.optimizer, trainer, extra, best=best, records=records)

    def check_finite(self, loss_value: float, where: str) -> None:
        if not math.isfinite(loss_value) or loss_value > self.explode_at:
            raise DivergedError(
                f"training diverged at step {self.state.step} ({where} loss {loss_value:.4g}); "
                f"the last good checkpoint in {self.config.out_dir} is kept; try a lower --lr or a --clip value"
            )

    # ------------------------------------------------------------ start and end
    def start_info(self) -> dict[str, Any]:
        data, tok = self.data, self.data.tokenizer
        oov_rate = data.valid_oov / max(1, len(data.valid_ids))
        warn_at = OOV_WARN_RATE.get(tok.kind)
        if warn_at is not None and oov_rate > warn_at:
            self.notes.append(
                f"{100 * oov_rate:.1f}% of the validation tokens are outside the vocabulary (scored as <unk>); "
                "is the validation text in the same language and script as the corpus?"
            )
        epochs, max_steps, budget = self.config.limits
        return {
            "out": str(self.config.out_dir),
            "resumed_from": self.resumed_from,
            "device": str(self.device),
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            "level": tok.kind,
            "vocab_size": tok.vocab_size,
            "parameters": self.model.num_parameters(),
            "train_tokens": len(data.train_ids),
            "valid_tokens": len(data.valid_ids),
            "valid_scored": min(len(data.valid_ids), self.config.eval_tokens or len(data.valid_ids)),
            "cache": str(data.cache),
            "cache_reused": data.reused,
            "valid_oov_rate": oov_rate,
            "windows_per_epoch": num_windows(self.train_rows, self.bptt),
            "epochs": epochs,
            "max_steps": max_steps,
            "time_budget": budget,
            "model": self.model.config.to_dict(),
            "already_done": self.resumed_from is not None and self.limits.reached(self.state) is not None,
            "chosen": self.chosen,
            "baselines": self.state.baselines,
            "warnings": list(self.notes),
        }

    def result(self, status: str, received: str | None) -> TrainResult:
        s = self.state
        run_time = time.perf_counter() - self._session_start
        summary = TrainResult(
            out=self.config.out_dir,
            status=status,
            step=s.step,
            epoch=s.epoch,
            best_valid_loss=s.best_valid,
            last_valid_loss=s.last_valid,
            train_loss=self.train_loss,
            elapsed=self.elapsed(),
            tokens_per_s=(s.tokens - self._tokens_at_start) / max(run_time, 1e-9),
            history=self.history,
            resumed_from=self.resumed_from,
            signal=received if status == "interrupted" else None,
            best_step=s.best_step,
            baselines=s.baselines,
            notes=self.end_notes(),
        )
        tok = self.data.tokenizer
        self.obs.on_end(asdict(summary) | {"out": str(summary.out), "vocab_size": tok.vocab_size, "level": tok.kind})
        return summary

    def end_notes(self) -> list[str]:
        """A network that ends worse than the Kneser-Ney baseline was not worth its budget: say so, and what instead."""
        b, best = self.state.baselines or {}, self.state.best_valid
        kn = b.get("kn")
        if not kn or best is None or best <= kn["loss"]:
            return []

        def ppl(x: float) -> str:
            return f"{x:.2f}" if x < 10 else f"{x:.1f}"

        return [
            f"the model's best validation (ppl {ppl(math.exp(min(best, 700.0)))}) is worse than the Kneser-Ney "
            f"{b['kn_order']}-gram baseline (ppl {ppl(kn['ppl'])}), estimated in seconds: use "
            "`charlm train --model kn`, or mix both with `charlm perplexity --interpolate`"
        ]
