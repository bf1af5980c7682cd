"""The sections of a training run's options (`charlm.training.config.TrainConfig` holds one of each).

Each section is what one part of charlm reads, and checks its own values:

    data       DataOptions       the text: corpus, validation files or fraction, decoding, token cache
    tokenizer  TokenizerOptions  how text becomes ids: level, vocabulary limits, pre-tokenizing, subwords
    model      ModelOptions      what is trained: its kind (rnn, kn), n-gram order, cell, shape, dropouts,
                                 tying, output layer (adaptive softmax and its clusters)
    optim      OptimOptions      how weights move: optimiser, rate, decay, momentum, clipping, schedule
    run        RunOptions        how a run goes and reports: where it writes, its limits, validation and
                                 logging cadence, samples, baselines, device, precision, seed, early stopping
    task       TaskOptions       what the language-model task owns: its batches (streams, BPTT window,
                                 jitter) and its loss's regularisers (AR, TAR)
    tagging    TaggingOptions    what a tagger run (--model tag) reads: the tag column, the span scheme, the CRF, the
                                 character LMs whose contextual string embeddings it is fed

Every field keeps its flat option name (the CLI's and `charlm.train`'s) except the model's kind, named
`model` as an option and `kind` in its section (`config.model.kind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from charlm.errors import ConfigError
from charlm.models import MODEL_KINDS
from charlm.runtime import PRECISIONS, check_device_name

LEVELS = ("char", "word", "subword")
PRETOKENIZERS = ("whitespace", "punct")
SUBWORD_MODELS = ("unigram", "bpe")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "plateau")
ENCODING_ERRORS = ("strict", "replace")
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; per-process offsets are added to the seed in a torchrun job
DEFAULT_TIME_BUDGET = 600.0
# Word vocabularies: at most this many ids by default. Raw text (--pretokenize punct) also drops
# words seen once (min_freq 2), so the model meets <unk> in training as it will in new text; text
# tokenized already (whitespace: PTB, WikiText) keeps its words, its <unk> being made upstream.
WORD_MAX_VOCAB = 50_000

Checks = list[tuple[bool, str]]


def _check(checks: Checks) -> None:
    """The first failed check's message as a ConfigError."""
    for cond, msg in checks:
        if not cond:
            raise ConfigError(msg)


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> tuple[bool, str]:
    return value in choices, f"unknown {name} {value!r}; choose {', '.join(choices)}"


@dataclass(frozen=True)
class DataOptions:
    """The text a run reads."""

    corpus: tuple[str, ...]
    valid: tuple[str, ...] = ()  # validation files; default: the last valid_fraction of the corpus
    valid_fraction: float = 0.1
    encoding_errors: str = "strict"
    cache_dir: str | None = None  # the token cache; default $CHARLM_CACHE_DIR or ~/.cache/charlm/tokens
    reverse: bool = False  # read the text backwards (a backward LM, for contextual string embeddings)

    def __post_init__(self) -> None:
        _check(
            [
                (len(self.corpus) > 0, "no corpus given; pass one or more text files or a directory"),
                _one_of("encoding errors mode", self.encoding_errors, ENCODING_ERRORS),
                (0.0 < self.valid_fraction < 1.0, f"--valid-fraction must be in (0, 1), got {self.valid_fraction}"),
            ]
        )


@dataclass(frozen=True)
class TokenizerOptions:
    """How the text becomes ids."""

    level: str = "char"
    min_freq: int | None = None  # word: 2 for raw text (punct: singletons become <unk>), 1 for tokenized text
    max_vocab: int | None = None  # word: WORD_MAX_VOCAB
    pretokenize: str = "whitespace"
    subword_vocab_size: int = 1000
    subword_model: str = "unigram"

    def __post_init__(self) -> None:
        _check(
            [
                _one_of("level", self.level, LEVELS),
                _one_of("pretokenize", self.pretokenize, PRETOKENIZERS),
                _one_of("subword model", self.subword_model, SUBWORD_MODELS),
                (self.min_freq is None or self.min_freq >= 1, f"--min-freq must be at least 1, got {self.min_freq}"),
                (self.max_vocab is None or self.max_vocab >= 3, "--max-vocab must be at least 3"),
                (self.subword_vocab_size >= 1, "--subword-vocab-size must be positive"),
            ]
        )

    def for_tokenizer(self) -> dict[str, Any]:
        """The keyword options of the level's tokenizer (charlm.data's `fit_tokenizer`)."""
        if self.level == "word":
            min_freq = self.min_freq or (2 if self.pretokenize == "punct" else 1)
            max_size = self.max_vocab or WORD_MAX_VOCAB
            return {"min_freq": min_freq, "max_size": max_size, "pretokenize": self.pretokenize}
        if self.level == "subword":
            return {"vocab_size": self.subword_vocab_size, "model_type": self.subword_model}
        return {}


@dataclass(frozen=True)
class ModelOptions:
    """What is trained. None: by level (LEVEL_DEFAULTS in charlm.training.config), or chosen for the run by
    charlm.training.autosize (from the budget, the machine and the corpus)."""

    kind: str = "rnn"  # MODEL_KINDS; the option `model`
    order: int | None = None  # kn only: the n-gram order; None: DEFAULT_ORDER of the level
    cell: str = "lstm"
    num_layers: int = 2
    hidden_size: int | None = None
    emb_size: int | None = None
    dropout: float | None = None
    dropout_input: float | None = None
    dropout_embed: float | None = None
    weight_drop: float | None = None
    locked_dropout: bool = True
    tie_weights: bool | None = None
    adaptive_softmax: bool | None = None  # None: on for a word vocabulary large enough to gain
    adaptive_cutoffs: tuple[int, ...] | None = None  # chosen from the training text's token frequencies

    def __post_init__(self) -> None:
        _check(
            [
                _one_of("model", self.kind, MODEL_KINDS),
                (self.order is None or self.order >= 1, f"--order must be at least 1, got {self.order}"),
                (
                    self.order is None or self.kind == "kn",
                    "--order applies to --model kn only; drop it or add --model kn",
                ),
            ]
        )


@dataclass(frozen=True)
class OptimOptions:
    """How the weights move."""

    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip: float = 5.0  # max gradient norm; 0 turns clipping off
    schedule: str = "cosine"
    warmup_steps: int | None = None  # None: the first 2% of the run
    min_lr_ratio: float = 0.05
    plateau_factor: float = 0.5
    plateau_patience: int = 1

    def __post_init__(self) -> None:
        _check(
            [
                _one_of("optimizer", self.optimizer, OPTIMIZERS),
                _one_of("schedule", self.schedule, SCHEDULES),
                (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}"),
                (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
                (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
                (self.clip >= 0, f"--clip must be >= 0 (0 turns clipping off), got {self.clip}"),
                (
                    self.warmup_steps is None or self.warmup_steps >= 0,
                    f"--warmup-steps must be >= 0, got {self.warmup_steps}",
                ),
                (0 <= self.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}"),
                (0 < self.plateau_factor < 1, f"--plateau-factor must be in (0, 1), got {self.plateau_factor}"),
                (self.plateau_patience >= 0, "--plateau-patience must be >= 0"),
            ]
        )


@dataclass(frozen=True)
class RunOptions:
    """How a run goes and reports. When none of `epochs`, `max_steps` and `time_budget` is given the run
    is limited to a 10-minute budget (DEFAULT_TIME_BUDGET)."""

    out: str | None = None  # default: checkpoints/<name of the first corpus path>
    epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # seconds
    patience: int | None = None  # early stopping: evaluations without improvement
    eval_interval: int = 250
    eval_streams: int = 32
    eval_tokens: int = 262_144  # validation scores at most this many held-out tokens, evenly spread (0: all)
    log_interval: int = 25
    sample_length: int | None = None  # tokens of the sample generated at each validation; None: by level, 0: none
    baselines: bool = True  # score the unigram and Kneser-Ney baselines at the start (charlm.training.baselines)
    device: str = "auto"
    precision: str = "auto"
    seed: int = 1337

    def __post_init__(self) -> None:
        _check(self._checks())
        check_device_name(self.device)

    def _checks(self) -> Checks:
        return [
            _one_of("precision", self.precision, PRECISIONS),
            (self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}"),
            (self.epochs is None or self.epochs > 0, f"--epochs must be positive, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1, got {self.max_steps}"),
            (self.time_budget is None or self.time_budget > 0, "--time-budget must be positive"),
            (self.eval_interval >= 1, f"--eval-interval must be at least 1, got {self.eval_interval}"),
            (self.eval_streams >= 1, f"--eval-streams must be at least 1, got {self.eval_streams}"),
            (self.eval_tokens >= 0, f"--eval-tokens must be >= 0 (0: all), got {self.eval_tokens}"),
            (self.log_interval >= 1, f"--log-interval must be at least 1, got {self.log_interval}"),
            (self.sample_length is None or self.sample_length >= 0, "--sample-length must be >= 0 (0: no samples)"),
            (0 <= self.seed <= MAX_SEED, f"--seed must be between 0 and {MAX_SEED}, got {self.seed}"),
        ]

    @property
    def limits(self) -> tuple[float | None, int | None, float | None]:
        """(epochs, max_steps, time_budget) with the default budget when none is set."""
        if self.epochs is None and self.max_steps is None and self.time_budget is None:
            return None, None, DEFAULT_TIME_BUDGET
        return self.epochs, self.max_steps, self.time_budget


@dataclass(frozen=True)
class TaskOptions:
    """What the language-model task owns: its batches and its loss's regularisers (None: by level or autosize).
    A tagger reads batch_size as sentences per batch."""

    batch_size: int | None = None
    bptt: int | None = None
    bptt_jitter: bool = False  # AWD-LSTM's random window lengths (lr scaled by length / bptt)
    ar: float | None = None  # activation regularisation (AWD-LSTM alpha)
    tar: float | None = None  # temporal activation regularisation (AWD-LSTM beta)

    def __post_init__(self) -> None:
        _check(
            [
                (
                    self.batch_size is None or self.batch_size >= 1,
                    f"--batch-size must be at least 1, got {self.batch_size}",
                ),
                (self.bptt is None or self.bptt >= 1, f"--bptt must be at least 1, got {self.bptt}"),
                ((self.ar or 0) >= 0 and (self.tar or 0) >= 0, "--ar and --tar must be >= 0"),
            ]
        )


TAG_COLUMNS = ("upos", "xpos")
TAG_SCHEMES = ("bio", "iob1", "bioes")


@dataclass(frozen=True)
class TaggingOptions:
    """What a tagger run reads (--model tag): None is chosen from the data (charlm.training.tasks.tag)."""

    tag_column: str = "upos"  # CoNLL-U: universal (upos) or language-specific (xpos) part of speech
    tag_scheme: str | None = None  # the span scheme of the files (bio, iob1, bioes); None: detected
    crf: bool | None = None  # a CRF over the tags; None: for span tags (entities), not for plain tags
    embeddings: tuple[str, ...] = ()  # charlm character-LM checkpoints whose states embed the words

    def __post_init__(self) -> None:
        _check(
            [
                _one_of("tag column", self.tag_column, TAG_COLUMNS),
                (
                    self.tag_scheme is None or self.tag_scheme in TAG_SCHEMES,
                    f"unknown tag scheme {self.tag_scheme!r}; choose {', '.join(TAG_SCHEMES)}",
                ),
            ]
        )
