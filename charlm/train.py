"""The truncated-BPTT trainer: from text files to a resumable checkpoint directory.

One run = read the corpus, hold out validation text, fit the tokenizer on the
training part only, then loop over windows of `bptt` steps across `batch_size`
parallel streams, carrying the recurrent state from window to window and
detaching it at each edge. Validation runs every `eval_interval` steps and at
the end; `best` keeps the lowest validation loss, `last` everything needed to
resume exactly where the run stopped.

Repeatability: with the same seed, a CPU run whose schedule is driven by steps
or epochs gives the same losses every time, and a run stopped and resumed gives
the same losses as one that never stopped. A `time_budget` drives the learning
rate by elapsed wall-clock time, which is repeatable only as far as the
machine's speed is.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F

from charlm import checkpoint as ckpt
from charlm.corpus import read_corpus
from charlm.devices import resolve_device
from charlm.distributed import DistContext
from charlm.data import batchify, get_batch, num_windows, split_train_valid, to_tensor
from charlm.errors import CheckpointError, ConfigError, DivergedError
from charlm.evaluate import evaluate_text
from charlm.model import ModelConfig, RNNLanguageModel, State, detach_state
from charlm.tokenizers import Tokenizer, fit_tokenizer, load_tokenizer

LEVELS = ("char", "word", "subword")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "plateau")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Options that may change when a run is resumed (how long to go on, how to report).
RESUMABLE_CHANGES = {"epochs", "max_steps", "time_budget", "log_interval", "device", "out", "corpus", "valid", "eval_interval", "patience"}


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; stored in checkpoint.json.

    When none of `epochs`, `max_steps` and `time_budget` is given the run is
    limited to a 10-minute budget (DEFAULT_TIME_BUDGET)."""

    corpus: tuple[str, ...]
    out: str | None = None  # default: checkpoints/<name of the first corpus file>
    valid: tuple[str, ...] = ()  # validation files; default: the last valid_fraction of the corpus
    valid_fraction: float = 0.1
    encoding_errors: str = "strict"
    # tokenizer
    level: str = "char"
    min_freq: int = 1
    max_vocab: int | None = None
    pretokenize: str = "whitespace"
    subword_vocab_size: int = 1000
    subword_model: str = "unigram"
    # model
    cell: str = "lstm"
    num_layers: int = 2
    hidden_size: int = 384  # defaults chosen by benchmarks/search_defaults.py (results_search.md)
    emb_size: int = 64
    dropout: float = 0.1
    dropout_input: float = 0.0
    dropout_embed: float = 0.0
    weight_drop: float = 0.0
    locked_dropout: bool = False
    tie_weights: bool = False
    # optimisation
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip: float = 5.0  # max gradient norm; 0 turns clipping off
    batch_size: int = 32
    bptt: int = 100
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    patience: int | None = None  # early stopping: evaluations without improvement
    ar: float = 0.0  # activation regularisation (AWD-LSTM alpha)
    tar: float = 0.0  # temporal activation regularisation (AWD-LSTM beta)
    # stopping and reporting
    epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # seconds
    eval_interval: int = 250
    eval_streams: int = 32
    log_interval: int = 25
    device: str = "auto"
    precision: str = "auto"
    seed: int = 1337

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(len(self.corpus) > 0, "no corpus given; pass one or more text files or a directory")
        need(self.level in LEVELS, f"unknown level {self.level!r}; choose char, word or subword")
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose adamw or sgd")
        need(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose {', '.join(SCHEDULES)}")
        need(self.precision in PRECISIONS, f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}")
        need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), f"unknown device {self.device!r}; choose auto, cpu, cuda, cuda:N or mps")
        need(self.encoding_errors in ("strict", "replace"), "encoding errors must be strict or replace")
        need(0.0 < self.valid_fraction < 1.0, f"--valid-fraction must be in (0, 1), got {self.valid_fraction}")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        need(self.clip >= 0, f"--clip must be >= 0 (0 turns clipping off), got {self.clip}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.bptt >= 1, f"--bptt must be at least 1, got {self.bptt}")
        need(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        need(0 <= self.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(0 < self.plateau_factor < 1, f"--plateau-factor must be in (0, 1), got {self.plateau_factor}")
        need(self.plateau_patience >= 0, "--plateau-patience must be >= 0")
        need(self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}")
        need(self.ar >= 0 and self.tar >= 0, "--ar and --tar must be >= 0")
        need(self.epochs is None or self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
        need(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1, got {self.max_steps}")
        need(self.time_budget is None or self.time_budget > 0, "--time-budget must be positive")
        need(self.eval_interval >= 1, f"--eval-interval must be at least 1, got {self.eval_interval}")
        need(self.eval_streams >= 1, f"--eval-streams must be at least 1, got {self.eval_streams}")
        need(self.log_interval >= 1, f"--log-interval must be at least 1, got {self.log_interval}")
        need(self.min_freq >= 1, f"--min-freq must be at least 1, got {self.min_freq}")
        need(self.max_vocab is None or self.max_vocab >= 3, "--max-vocab must be at least 3")
        need(self.subword_vocab_size >= 1, "--subword-vocab-size must be positive")
        self.model_config(vocab_size=2)  # checks the model options early

    DEFAULT_TIME_BUDGET = 600.0

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            cell=self.cell,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            emb_size=self.emb_size,
            dropout=self.dropout,
            dropout_input=self.dropout_input,
            dropout_embed=self.dropout_embed,
            weight_drop=self.weight_drop,
            locked_dropout=self.locked_dropout,
            tie_weights=self.tie_weights,
        )

    def tokenizer_options(self) -> dict[str, Any]:
        if self.level == "word":
            return {"min_freq": self.min_freq, "max_size": self.max_vocab, "pretokenize": self.pretokenize}
        if self.level == "subword":
            return {"vocab_size": self.subword_vocab_size, "model_type": self.subword_model}
        return {}

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        first = Path(self.corpus[0])
        return Path("checkpoints") / (first.stem if first.suffix else first.name)

    @property
    def limits(self) -> tuple[float | None, int | None, float | None]:
        """(epochs, max_steps, time_budget) with the default budget when none is set."""
        if self.epochs is None and self.max_steps is None and self.time_budget is None:
            return None, None, self.DEFAULT_TIME_BUDGET
        return self.epochs, self.max_steps, self.time_budget

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["corpus"], d["valid"] = list(self.corpus), list(self.valid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["corpus"], d["valid"] = tuple(d.get("corpus", ())), tuple(d.get("valid", ()))
        return cls(**d)


# ---------------------------------------------------------------- observing
class TrainObserver(Protocol):
    """What the trainer tells a front end (the CLI's progress display, a test)."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_log(self, record: dict[str, Any]) -> None: ...
    def on_eval(self, record: dict[str, Any]) -> None: ...
    def on_end(self, summary: dict[str, Any]) -> None: ...


class SilentObserver:
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
    status: str  # "finished" | "time budget" | "max steps" | "epochs" | "early stop" | "interrupted"
    step: int
    epoch: int
    best_valid_loss: float | None
    last_valid_loss: float | None
    train_loss: float | None
    elapsed: float
    tokens_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- pieces
def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. auto = bf16 on CUDA where supported, else fp16; fp32 on CPU."""
    if name == "fp32":
        return None
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
    return torch.bfloat16 if name == "bf16" else torch.float16


def lr_factor(config: TrainConfig, step: int, progress: float, plateau_scale: float) -> float:
    """Multiplier of the base learning rate: linear warm-up, then the chosen decay.

    progress in [0, 1] is how far the run is towards its first limit (steps,
    epochs or time budget); cosine and linear decay to min_lr_ratio at 1.
    """
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


def make_optimizer(config: TrainConfig, model: RNNLanguageModel) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class _StopFlag:
    """First Ctrl-C asks the loop to save and stop at the next step; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# ---------------------------------------------------------------- preparing a run
@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train_ids: torch.Tensor  # (N,)
    valid_ids: torch.Tensor  # (M,)
    valid_text: str
    fingerprint: str


def prepare_data(config: TrainConfig, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Read and split the text, fit the tokenizer on the training part (unless given), encode both."""
    text = read_corpus(list(config.corpus), errors=config.encoding_errors)
    if config.valid:
        train_text, valid_text = text, read_corpus(list(config.valid), errors=config.encoding_errors)
    else:
        train_text, valid_text = split_train_valid(text, config.valid_fraction)
    if tokenizer is None:
        tokenizer = fit_tokenizer(config.level, train_text, **config.tokenizer_options())
    train_ids = to_tensor(tokenizer.encode_array(train_text))
    valid_ids = to_tensor(tokenizer.encode_array(valid_text))
    need = config.batch_size * (config.bptt + 1)
    if train_ids.numel() < need:
        raise ConfigError(
            f"the training text has {train_ids.numel()} tokens, fewer than one window needs "
            f"(batch size {config.batch_size} x (bptt {config.bptt} + 1) = {need}); "
            "use a longer corpus or smaller --batch-size/--bptt"
        )
    if valid_ids.numel() < 2:
        raise ConfigError("the validation text has fewer than 2 tokens; use a larger --valid-fraction or a longer --valid file")
    return PreparedData(tokenizer, train_ids, valid_ids, valid_text, _fingerprint(train_text))


def _check_out_dir(config: TrainConfig, resume: bool, overwrite: bool) -> Path:
    """Refuse a directory the run may not use; changes nothing on disk."""
    out = config.out_dir
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; choose one")
    if resume:
        if not ckpt.is_checkpoint_dir(out):
            raise CheckpointError(f"nothing to resume in {out}: no checkpoint there; drop --resume to start a new run")
    elif _holds_run(out) and not overwrite:
        raise CheckpointError(f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, or --out DIR")
    elif out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory")
    return out


def _holds_run(out: Path) -> bool:
    return ckpt.is_checkpoint_dir(out) or (out / ckpt.LAST).exists() or (out / ckpt.BEST).exists()


def _clear_out_dir(out: Path) -> None:
    """--overwrite: remove the previous run's files (only once the new run is known to start)."""
    for name in (ckpt.META_FILE, ckpt.BEST, ckpt.LAST, ckpt.METRICS, "tokenizer.json", "tokenizer.model"):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


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

    `stop_after(step)` lets a caller stop the run as Ctrl-C would (tests use it).
    Raises `CharlmError` subclasses for bad input, `DivergedError` when the loss
    becomes non-finite or explodes (the checkpoint on disk is left as it was).
    """
    obs = observer or SilentObserver()
    dctx = DistContext.from_env()
    # In a torchrun job rank 0 alone checks and writes the directory (the others would
    # race with its writes); they only read it, when resuming.
    out = _check_out_dir(config, resume, overwrite) if dctx.is_main else config.out_dir

    saved: dict[str, Any] | None = None
    tensors: dict[str, torch.Tensor] = {}
    if resume:
        info = ckpt.open_checkpoint(out)
        stored = TrainConfig.from_dict(info.train_config)
        # The run's options come from the checkpoint; only limits and reporting may change
        # (the CLI refuses other options given with --resume).
        config = replace(stored, **{k: getattr(config, k) for k in RESUMABLE_CHANGES})
        tokenizer = load_tokenizer(out)
        tensors, saved = ckpt.load_training_state(out)
        if "rng/cpu" not in tensors or not isinstance(saved.get("trainer"), dict):
            raise CheckpointError(f"{out / ckpt.LAST} lacks the training state a resume needs; the checkpoint is corrupt")
        data = prepare_data(config, tokenizer)
        if saved["trainer"].get("fingerprint") != data.fingerprint:
            raise CheckpointError(f"the training text differs from the one {out} was trained on; resume with the same corpus or start a new run")
        model_config = info.model_config
        if model_config.vocab_size != tokenizer.vocab_size:
            raise CheckpointError(f"{out}: tokenizer and model disagree on the vocabulary size; the checkpoint is corrupt")
    else:
        torch.manual_seed(config.seed)
        data = prepare_data(config)
        tokenizer = data.tokenizer
        model_config = config.model_config(tokenizer.vocab_size)

    device = resolve_device(config.device)
    amp_dtype = resolve_precision(config.precision, device)
    main = dctx.is_main
    if not main:
        obs = SilentObserver()
    if not resume and main:  # only once every option is known good, so a refused start leaves no half run behind
        _clear_out_dir(out)
        ckpt.write_run_files(out, model_config, tokenizer, config.to_dict())
    device = dctx.setup(device)
    try:
        return _train_loop(config, out, resume, obs, stop_after, dctx, device, amp_dtype, model_config, tokenizer, data, tensors, saved)
    finally:
        dctx.shutdown()


def _train_loop(
    config: TrainConfig,
    out: Path,
    resume: bool,
    obs: TrainObserver,
    stop_after: Callable[[int], bool] | None,
    dctx: DistContext,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    model_config: ModelConfig,
    tokenizer: Tokenizer,
    data: PreparedData,
    tensors: dict[str, torch.Tensor],
    saved: dict[str, Any] | None,
) -> TrainResult:
    main = dctx.is_main
    model = RNNLanguageModel(model_config).to(device)
    optimizer = make_optimizer(config, model)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    # ---- counters (restored on resume)
    st: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "window": 0,
        "elapsed": 0.0,
        "tokens": 0,
        "best_valid": None,
        "last_valid": None,
        "bad_evals": 0,
        "plateau_bad": 0,
        "plateau_scale": 1.0,
        "fingerprint": data.fingerprint,
    }
    hidden: State | None = None
    if saved is not None:
        ckpt.load_model_tensors(model, tensors, out / ckpt.LAST)
        try:
            ckpt.optimizer_from_flat(optimizer, {k: v.to(device) for k, v in tensors.items()}, saved["optimizer"])
            torch.set_rng_state(tensors["rng/cpu"])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{out / ckpt.LAST} has an unusable optimiser or RNG state ({type(exc).__name__}); the checkpoint is corrupt") from None
        st.update(saved["trainer"])
        if device.type == "cuda" and "rng/cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng/cuda"], device)
        carry = [tensors[f"carry/{i}"].to(device) for i in range(model.num_state_tensors) if f"carry/{i}" in tensors]
        hidden = tuple(carry) if carry else None
        if main:
            ckpt.truncate_metrics(out, st["step"])
    if dctx.active:
        # Ranks share the weights (DDP broadcasts rank 0's) but not dropout masks. A
        # resumed multi-process run restarts the carried state from zero: the
        # checkpoint holds rank 0's only.
        torch.manual_seed(config.seed + 7919 * (dctx.rank + 1) + st["step"])
        hidden = None
    net = dctx.wrap(model, device)

    train_data = batchify(dctx.shard(data.train_ids).to(device), config.batch_size)  # (B, L)
    windows = num_windows(train_data, config.bptt)
    epochs_limit, steps_limit, budget = config.limits
    vocab = model_config.vocab_size
    explode_at = 3.0 * math.log(vocab) + 1.0

    obs.on_start(
        {
            "out": str(out),
            "resumed_from": st["step"] if resume else None,
            "device": str(device),
            "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "level": config.level,
            "vocab_size": vocab,
            "parameters": model.num_parameters(),
            "train_tokens": data.train_ids.numel(),
            "valid_tokens": data.valid_ids.numel(),
            "windows_per_epoch": windows,
            "epochs": epochs_limit,
            "max_steps": steps_limit,
            "time_budget": budget,
            "model": model_config.to_dict(),
        }
    )

    history: list[dict[str, Any]] = []
    loss_sum = torch.zeros((), device=device)  # token-weighted, since the last log
    loss_tokens = 0
    last_train_loss: float | None = None
    last_eval_cost = 0.0
    session_start = time.perf_counter()
    elapsed_before = float(st["elapsed"])
    tokens_at_start = int(st["tokens"])
    status = "finished"

    synced_elapsed = elapsed_before

    def elapsed() -> float:
        return elapsed_before + (time.perf_counter() - session_start)

    def clock() -> float:
        """The time the schedule sees: this process's, or in a torchrun job the slowest rank's at the last sync."""
        return synced_elapsed if dctx.active else elapsed()

    def progress() -> float:
        p = 0.0
        if steps_limit:
            p = max(p, st["step"] / steps_limit)
        if epochs_limit:
            p = max(p, (st["epoch"] + st["window"] / windows) / epochs_limit)
        if budget:
            p = max(p, clock() / budget)
        return p

    def save_last() -> None:
        extra = {"rng/cpu": torch.get_rng_state()}
        if device.type == "cuda":
            extra["rng/cuda"] = torch.cuda.get_rng_state(device)
        if hidden is not None:
            extra.update({f"carry/{i}": h for i, h in enumerate(hidden)})
        st["elapsed"] = elapsed()
        ckpt.save_training_state(out, model, optimizer, dict(st), extra)

    def validate() -> dict[str, Any]:
        # The same function and defaults as `charlm perplexity`, so its figure on the
        # validation text reproduces the loss recorded here.
        score = evaluate_text(model, tokenizer, data.valid_text, streams=config.eval_streams, amp_dtype=amp_dtype)
        loss = score.loss
        return {
            "type": "valid",
            "step": st["step"],
            "epoch": st["epoch"],
            "valid_loss": loss,
            "valid_ppl": math.exp(min(loss, 700.0)),
            "valid_bpc": score.bits_per_char,
            "valid_bpb": score.bits_per_byte,
            "valid_tokens": score.tokens,
            "valid_oov": score.oov,
            "elapsed": round(elapsed(), 3),
        }

    def check_finite(loss_value: float, where: str) -> None:
        if not math.isfinite(loss_value) or loss_value > explode_at:
            raise DivergedError(
                f"training diverged at step {st['step']} ({where} loss {loss_value:.4g}); "
                f"the last good checkpoint in {out} is kept; try a lower --lr or a --clip value"
            )

    def evaluate_and_save(final: bool) -> bool:
        """Validate and save on rank 0, then share its decisions with every rank. True = stop early."""
        nonlocal last_eval_cost
        st["last_eval_step"] = st["step"]  # on every rank: the end of the run asks whether to validate again
        if not dctx.active:
            return _evaluate_and_save_main(final)
        stop = False
        if main:
            try:
                stop = _evaluate_and_save_main(final)
            except DivergedError:
                dctx.from_main([1.0, 0.0, st["plateau_scale"], last_eval_cost], device)
                raise
        flags = dctx.from_main([0.0, float(stop), st["plateau_scale"], last_eval_cost], device)  # [diverged, stop, ...]
        if flags[0]:
            raise DivergedError(f"training diverged at step {st['step']} (rank 0's validation); the last good checkpoint in {out} is kept")
        st["plateau_scale"], last_eval_cost = flags[2], flags[3]
        return bool(flags[1])

    def _evaluate_and_save_main(final: bool) -> bool:
        nonlocal last_eval_cost
        t0 = time.perf_counter()
        rec = validate()
        check_finite(rec["valid_loss"], "validation")
        st["last_valid"] = rec["valid_loss"]
        improved = st["best_valid"] is None or rec["valid_loss"] < st["best_valid"]
        if improved:
            st["best_valid"] = rec["valid_loss"]
            st["bad_evals"] = 0
            st["plateau_bad"] = 0
            ckpt.save_weights(out, "best", model, {"step": st["step"], "valid_loss": rec["valid_loss"]})
        else:
            st["bad_evals"] += 1
            st["plateau_bad"] += 1
            if config.schedule == "plateau" and st["plateau_bad"] > config.plateau_patience:
                st["plateau_scale"] *= config.plateau_factor
                st["plateau_bad"] = 0
        rec["best_valid_loss"] = st["best_valid"]
        rec["improved"] = improved
        st["last_eval_step"] = st["step"]
        save_last()
        last_eval_cost = time.perf_counter() - t0  # validation + saving: reserved before the budget ends
        ckpt.append_metrics(out, [rec])
        history.append(rec)
        obs.on_eval(rec)
        return config.patience is not None and st["bad_evals"] >= config.patience

    def flush_log() -> None:
        nonlocal loss_sum, loss_tokens, last_train_loss
        if loss_tokens == 0:
            return
        total, count = dctx.all_sum([float(loss_sum), float(loss_tokens)], device)  # the one host sync per log interval
        value = total / count
        check_finite(value, "training")
        last_train_loss = value
        run_time = time.perf_counter() - session_start
        rec = {
            "type": "train",
            "step": st["step"],
            "epoch": st["epoch"],
            "loss": value,
            "lr": optimizer.param_groups[0]["lr"],
            "tokens_per_s": (st["tokens"] - tokens_at_start) / max(run_time, 1e-9),
            "elapsed": round(elapsed(), 3),
            "time_left": None if budget is None else max(0.0, budget - elapsed()),
            "progress": min(1.0, progress()),
        }
        if main:
            ckpt.append_metrics(out, [rec])
        history.append(rec)
        obs.on_log(rec)
        loss_sum = torch.zeros((), device=device)
        loss_tokens = 0

    params = [p for p in model.parameters() if p.requires_grad]
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    model.train()
    with _StopFlag() as stop_flag:
        while True:
            # ---- limits, checked before each step
            if steps_limit is not None and st["step"] >= steps_limit:
                status = "max steps"
                break
            if st["window"] >= windows:
                st["epoch"] += 1
                st["window"] = 0
                hidden = None  # a new pass over the streams starts from the zero state
            if epochs_limit is not None and st["epoch"] + st["window"] / windows >= epochs_limit:
                status = "epochs"
                break
            out_of_time = budget is not None and elapsed() + last_eval_cost >= budget
            asked_to_stop = stop_flag.requested or (stop_after is not None and stop_after(st["step"]))
            if dctx.active:  # ranks agree at log intervals only, so no step waits on a collective for this
                if st["step"] % config.log_interval:
                    out_of_time = asked_to_stop = False
                else:
                    t, a, synced_elapsed = dctx.all_max([float(out_of_time), float(asked_to_stop), elapsed()], device)
                    out_of_time, asked_to_stop = bool(t), bool(a)
            if out_of_time:
                status = "time budget"
                break
            if asked_to_stop:
                status = "interrupted"
                break

            # ---- one truncated-BPTT step
            lr = config.lr * lr_factor(config, st["step"], progress(), st["plateau_scale"])
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = get_batch(train_data, st["window"] * config.bptt, config.bptt)  # (B, T), (B, T)
            with autocast():
                logits, hidden, feats = net(x, hidden, return_features=True)  # (B, T, V), state, (B, T, D)
                loss = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
                objective = loss
                if config.ar:
                    objective = objective + config.ar * feats.float().pow(2).mean()
                if config.tar:
                    objective = objective + config.tar * (feats[:, 1:] - feats[:, :-1]).float().pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(objective).backward()
                scaler.unscale_(optimizer)
            else:
                objective.backward()
            if config.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.clip, foreach=True)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            hidden = detach_state(hidden)  # cut the graph at the window edge, keep the values
            n = y.numel()
            loss_sum += loss.detach() * n
            loss_tokens += n
            st["step"] += 1
            st["window"] += 1
            st["tokens"] += n

            if st["step"] % config.log_interval == 0:
                flush_log()
            if st["step"] % config.eval_interval == 0:
                flush_log()
                if evaluate_and_save(final=False):
                    status = "early stop"
                    break

        flush_log()
        if st.get("last_eval_step") != st["step"]:
            if status == "interrupted":
                if main:
                    save_last()  # quick: no validation on Ctrl-C
            else:
                evaluate_and_save(final=True)

    run_time = time.perf_counter() - session_start
    summary = TrainResult(
        out=out,
        status=status,
        step=st["step"],
        epoch=st["epoch"],
        best_valid_loss=st["best_valid"],
        last_valid_loss=st["last_valid"],
        train_loss=last_train_loss,
        elapsed=elapsed(),
        tokens_per_s=(st["tokens"] - tokens_at_start) / max(run_time, 1e-9),
        history=history,
    )
    obs.on_end(asdict(summary) | {"out": str(out), "vocab_size": vocab, "level": config.level})
    return summary
