"""A training run's options (`TrainConfig`) and the one rule for what a resume may change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from charlm.errors import ConfigError
from charlm.models import MODEL_KINDS, ModelConfig
from charlm.runtime import PRECISIONS, check_device_name

LEVELS = ("char", "word", "subword")
PRETOKENIZERS = ("whitespace", "punct")
SUBWORD_MODELS = ("unigram", "bpe")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "plateau")
ENCODING_ERRORS = ("strict", "replace")
# The n-gram order of `--model kn` when --order is not given, by level (measured in benchmarks/results_ngram.md).
DEFAULT_ORDER = {"char": 7, "word": 5, "subword": 5}
# The options a Kneser-Ney run reads; any other option set explicitly is refused (`check_ngram_options`).
NGRAM_OPTIONS = frozenset(
    {
        "corpus", "out", "valid", "valid_fraction", "encoding_errors", "level", "min_freq", "max_vocab",
        "pretokenize", "subword_vocab_size", "subword_model", "model", "order", "eval_tokens", "sample_length",
        "seed", "cache_dir",
    }
)  # fmt: skip
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; per-process offsets are added to the seed in a torchrun job

# The limits change together: naming one on --resume replaces all three.
LIMITS = ("epochs", "max_steps", "time_budget")
# Options that may change when a run is resumed (how long to go on, where and how to report).
RESUMABLE = frozenset(
    {
        *LIMITS,
        "log_interval",
        "eval_interval",
        "sample_length",
        "patience",
        "device",
        "out",
        "corpus",
        "valid",
        "cache_dir",
    }
)
DEFAULT_TIME_BUDGET = 600.0
# Word vocabularies: at most this many ids by default. Raw text (--pretokenize punct) also drops
# words seen once (min_freq 2), so the model meets <unk> in training as it will in new text; text
# tokenized already (whitespace: PTB, WikiText) keeps its words, its <unk> being made upstream.
WORD_MAX_VOCAB = 50_000

# Options whose default depends on the level (None in TrainConfig: `with_level_defaults` fills them).
# The char values are the measured char defaults of earlier versions, unchanged. For words
# (AWD-LSTM scaled down for a CPU budget, not yet tuned by a search: benchmarks/bench_word.py
# --budget checks them): the embedding as wide as the hidden layer (emb_size None here: it
# follows hidden_size) and tied to the decoder, a 50-token window, AR/TAR; the dropouts that
# depend on how often the text is seen are chosen by charlm.training.autosize, and the adaptive softmax
# by the vocabulary size.
LEVEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "char": dict(
        emb_size=64, bptt=100, tie_weights=False, dropout_input=0.0, dropout_embed=0.0, weight_drop=0.0,
        ar=0.0, tar=0.0, adaptive_softmax=False,
    ),
    "word": dict(bptt=50, tie_weights=True, ar=1.0, tar=1.0),
}  # fmt: skip
LEVEL_DEFAULTS["subword"] = LEVEL_DEFAULTS["char"]  # not measured for subwords yet: the char values, as before
# Fields `with_level_defaults` may fill; any still None after autosize is chosen there.
LEVEL_FIELDS = (
    "emb_size", "bptt", "tie_weights", "dropout_input", "dropout_embed", "weight_drop", "ar", "tar", "adaptive_softmax",
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; stored in checkpoint.json.

    When none of `epochs`, `max_steps` and `time_budget` is given the run is
    limited to a 10-minute budget (DEFAULT_TIME_BUDGET)."""

    corpus: tuple[str, ...]
    out: str | None = None  # default: checkpoints/<name of the first corpus path>
    valid: tuple[str, ...] = ()  # validation files; default: the last valid_fraction of the corpus
    valid_fraction: float = 0.1
    encoding_errors: str = "strict"
    # tokenizer
    level: str = "char"
    min_freq: int | None = None  # word: 2 for raw text (punct: singletons become <unk>), 1 for tokenized text
    max_vocab: int | None = None  # word: WORD_MAX_VOCAB
    pretokenize: str = "whitespace"
    subword_vocab_size: int = 1000
    subword_model: str = "unigram"
    # model
    model: str = "rnn"  # MODEL_KINDS
    order: int | None = None  # kn only: the n-gram order; None: DEFAULT_ORDER of the level
    cell: str = "lstm"
    num_layers: int = 2
    # None: chosen for the run by charlm.training.autosize (from the budget, the machine and the corpus)
    hidden_size: int | None = None
    # None: by level (LEVEL_DEFAULTS), or chosen by charlm.training.autosize
    emb_size: int | None = None
    dropout: float | None = None
    dropout_input: float | None = None
    dropout_embed: float | None = None
    weight_drop: float | None = None
    locked_dropout: bool = True
    tie_weights: bool | None = None
    adaptive_softmax: bool | None = (
        None  # None: on for a word vocabulary large enough to gain (charlm.training.autosize)
    )
    adaptive_cutoffs: tuple[int, ...] | None = None  # chosen from the training text's token frequencies
    # optimisation
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip: float = 5.0  # max gradient norm; 0 turns clipping off
    batch_size: int | None = None
    bptt: int | None = None
    bptt_jitter: bool = False  # AWD-LSTM's random window lengths (lr scaled by length / bptt)
    schedule: str = "cosine"
    warmup_steps: int | None = None  # None: the first 2% of the run
    min_lr_ratio: float = 0.05
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    patience: int | None = None  # early stopping: evaluations without improvement
    ar: float | None = None  # activation regularisation (AWD-LSTM alpha)
    tar: float | None = None  # temporal activation regularisation (AWD-LSTM beta)
    # stopping and reporting
    epochs: float | None = None
    max_steps: int | None = None
    time_budget: float | None = None  # seconds
    eval_interval: int = 250
    eval_streams: int = 32
    eval_tokens: int = 262_144  # validation scores at most this many held-out tokens, evenly spread (0: all)
    log_interval: int = 25
    sample_length: int | None = None  # tokens of the sample generated at each validation; None: by level, 0: none
    baselines: bool = True  # score the unigram and Kneser-Ney baselines at the start (charlm.training.baselines)
    device: str = "auto"
    precision: str = "auto"
    seed: int = 1337
    cache_dir: str | None = None  # the token cache; default $CHARLM_CACHE_DIR or ~/.cache/charlm/tokens

    def __post_init__(self) -> None:
        for cond, msg in self._checks():
            if not cond:
                raise ConfigError(msg)
        check_device_name(self.device)
        self.model_config(vocab_size=2, check_only=True)  # checks the model options early

    def _checks(self) -> list[tuple[bool, str]]:
        def one_of(name: str, value: str, choices: tuple[str, ...]) -> tuple[bool, str]:
            return value in choices, f"unknown {name} {value!r}; choose {', '.join(choices)}"

        return [
            (len(self.corpus) > 0, "no corpus given; pass one or more text files or a directory"),
            one_of("level", self.level, LEVELS),
            one_of("model", self.model, MODEL_KINDS),
            (self.order is None or self.order >= 1, f"--order must be at least 1, got {self.order}"),
            (self.order is None or self.model == "kn", "--order applies to --model kn only; drop it or add --model kn"),
            one_of("pretokenize", self.pretokenize, PRETOKENIZERS),
            one_of("subword model", self.subword_model, SUBWORD_MODELS),
            one_of("optimizer", self.optimizer, OPTIMIZERS),
            one_of("schedule", self.schedule, SCHEDULES),
            one_of("precision", self.precision, PRECISIONS),
            one_of("encoding errors mode", self.encoding_errors, ENCODING_ERRORS),
            (0.0 < self.valid_fraction < 1.0, f"--valid-fraction must be in (0, 1), got {self.valid_fraction}"),
            (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.clip >= 0, f"--clip must be >= 0 (0 turns clipping off), got {self.clip}"),
            (
                self.batch_size is None or self.batch_size >= 1,
                f"--batch-size must be at least 1, got {self.batch_size}",
            ),
            (self.bptt is None or self.bptt >= 1, f"--bptt must be at least 1, got {self.bptt}"),
            (
                self.warmup_steps is None or self.warmup_steps >= 0,
                f"--warmup-steps must be >= 0, got {self.warmup_steps}",
            ),
            (0 <= self.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (0 < self.plateau_factor < 1, f"--plateau-factor must be in (0, 1), got {self.plateau_factor}"),
            (self.plateau_patience >= 0, "--plateau-patience must be >= 0"),
            (self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}"),
            ((self.ar or 0) >= 0 and (self.tar or 0) >= 0, "--ar and --tar must be >= 0"),
            (self.epochs is None or self.epochs > 0, f"--epochs must be positive, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1, got {self.max_steps}"),
            (self.time_budget is None or self.time_budget > 0, "--time-budget must be positive"),
            (self.eval_interval >= 1, f"--eval-interval must be at least 1, got {self.eval_interval}"),
            (self.eval_streams >= 1, f"--eval-streams must be at least 1, got {self.eval_streams}"),
            (self.eval_tokens >= 0, f"--eval-tokens must be >= 0 (0: all), got {self.eval_tokens}"),
            (self.log_interval >= 1, f"--log-interval must be at least 1, got {self.log_interval}"),
            (self.sample_length is None or self.sample_length >= 0, "--sample-length must be >= 0 (0: no samples)"),
            (self.min_freq is None or self.min_freq >= 1, f"--min-freq must be at least 1, got {self.min_freq}"),
            (self.max_vocab is None or self.max_vocab >= 3, "--max-vocab must be at least 3"),
            (self.subword_vocab_size >= 1, "--subword-vocab-size must be positive"),
            (0 <= self.seed <= MAX_SEED, f"--seed must be between 0 and {MAX_SEED}, got {self.seed}"),
        ]

    @property
    def resolved(self) -> bool:
        """True once every option left to charlm (None) has been chosen (`charlm.training.autosize.resolve`)."""
        return None not in (self.hidden_size, self.dropout, self.batch_size, self.lr) and all(
            getattr(self, name) is not None for name in LEVEL_FIELDS
        )

    def with_level_defaults(self) -> TrainConfig:
        """Options left open that depend only on the level filled in (`LEVEL_DEFAULTS`); a word
        embedding takes the hidden width once that is known. Explicit options are kept."""
        fill = {k: v for k, v in LEVEL_DEFAULTS[self.level].items() if getattr(self, k) is None}
        c = replace(self, **fill) if fill else self
        if c.emb_size is None and c.hidden_size is not None:  # levels without a fixed embedding size: the width
            c = replace(c, emb_size=c.hidden_size)
        return c

    def model_config(self, vocab_size: int, check_only: bool = False) -> ModelConfig:
        """The model's shape; `check_only` stands in for options not chosen yet, to check the others."""
        c = self.with_level_defaults()
        if not (check_only or c.resolved):
            raise ValueError(
                "the options left to charlm are not chosen yet; call charlm.training.autosize.resolve first"
            )
        if c.adaptive_softmax and c.adaptive_cutoffs is None and not check_only:
            raise ValueError(
                "adaptive softmax cutoffs are not chosen yet; call charlm.training.autosize.output_layer first"
            )
        return ModelConfig(
            vocab_size=vocab_size,
            cell=c.cell,
            num_layers=c.num_layers,
            hidden_size=c.hidden_size or 1,
            emb_size=c.emb_size or 1,
            dropout=c.dropout or 0.0,
            dropout_input=c.dropout_input or 0.0,
            dropout_embed=c.dropout_embed or 0.0,
            weight_drop=c.weight_drop or 0.0,
            locked_dropout=c.locked_dropout,
            tie_weights=bool(c.tie_weights),
            adaptive_cutoffs=c.adaptive_cutoffs if c.adaptive_softmax and not check_only else None,
        )

    @property
    def ngram_order(self) -> int:
        """The order of a Kneser-Ney run: --order, else the level's default."""
        return self.order if self.order is not None else DEFAULT_ORDER[self.level]

    def tokenizer_options(self) -> dict[str, Any]:
        if self.level == "word":
            min_freq = self.min_freq or (2 if self.pretokenize == "punct" else 1)
            max_size = self.max_vocab or WORD_MAX_VOCAB
            return {"min_freq": min_freq, "max_size": max_size, "pretokenize": self.pretokenize}
        if self.level == "subword":
            return {"vocab_size": self.subword_vocab_size, "model_type": self.subword_model}
        return {}

    @property
    def out_dir(self) -> Path:
        """--out, or checkpoints/<name of the first corpus path> ("." is named after the directory it is)."""
        if self.out:
            return Path(self.out)
        first = Path(self.corpus[0])
        name = first.stem if first.suffix else first.name
        if name in ("", ".", ".."):
            name = first.resolve().name or "corpus"
        return Path("checkpoints") / name

    @property
    def limits(self) -> tuple[float | None, int | None, float | None]:
        """(epochs, max_steps, time_budget) with the default budget when none is set."""
        if self.epochs is None and self.max_steps is None and self.time_budget is None:
            return None, None, DEFAULT_TIME_BUDGET
        return self.epochs, self.max_steps, self.time_budget

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["corpus"], d["valid"] = list(self.corpus), list(self.valid)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from `to_dict` data; unknown keys are refused, as `ModelConfig.from_dict` does."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(
                f"unknown training options {sorted(unknown)}; was this checkpoint made by a newer charlm?"
            )
        d = dict(d)
        d["corpus"], d["valid"] = tuple(d.get("corpus", ())), tuple(d.get("valid", ()))
        d.setdefault("adaptive_softmax", False)  # runs that predate it have a full softmax
        if d.get("adaptive_cutoffs") is not None:
            d["adaptive_cutoffs"] = tuple(d["adaptive_cutoffs"])
        return cls(**d)

    def explicit_options(self) -> dict[str, Any]:
        """The options that differ from the defaults: what a library caller set (corpus and out always count)."""
        defaults = {f.name: f.default for f in fields(self) if f.name != "corpus"}
        return {k: v for k, v in self.to_dict().items() if k in ("corpus", "out") or v != _listed(defaults.get(k))}


def check_ngram_options(given: Mapping[str, Any], flag_names: Mapping[str, str] | None = None) -> None:
    """Refuse options that a Kneser-Ney run would ignore (hidden size, lr, time budget, ...): one ConfigError
    naming their flags. `given` holds the options set explicitly (see `resumed_config`)."""
    names = flag_names or {}
    ignored = sorted(k for k in given if k not in NGRAM_OPTIONS)
    if ignored:
        flags = ", ".join(names.get(k, "--" + k.replace("_", "-")) for k in ignored)
        raise ConfigError(f"{flags} {'does' if len(ignored) == 1 else 'do'} not apply to --model kn; drop them")


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def resumed_config(
    stored: Mapping[str, Any], given: Mapping[str, Any], flag_names: Mapping[str, str] | None = None
) -> TrainConfig:
    """The options of a resumed run: the run's own, with the changes a resume may make.

    `given` holds only the options the caller set explicitly (the command line's,
    or `TrainConfig.explicit_options()` for a library call). Options in RESUMABLE
    take the given value; the limits change only as a group (naming one replaces
    all three); any other option must equal the run's own value (restating it is
    fine), else a one-line ConfigError names the flags (`flag_names` maps option
    names to the flags shown).
    """
    run = TrainConfig.from_dict(stored)
    names = flag_names or {}
    fixed = sorted(k for k, v in given.items() if k not in RESUMABLE and _listed(getattr(run, k, v)) != _listed(v))
    if fixed:
        flags = ", ".join(names.get(k, "--" + k.replace("_", "-")) for k in fixed)
        raise ConfigError(
            f"{flags} cannot change when resuming (the run keeps its options); "
            "drop them, or start a new run with --overwrite"
        )
    changes = {k: v for k, v in given.items() if k in RESUMABLE}
    if changes.keys() & set(LIMITS):
        changes = {**dict.fromkeys(LIMITS), **changes}
    if "valid" in changes:
        changes["valid"] = tuple(changes["valid"])
    if "corpus" in changes:
        changes["corpus"] = tuple(changes["corpus"])
    return replace(run, **changes)
