"""A training run's options (`TrainConfig`, in sections) and the one rule for what a resume may change.

`TrainConfig` holds one dataclass per section (charlm.training.sections says what each holds and why):
`config.data`, `config.tokenizer`, `config.model`, `config.optim`, `config.run`, `config.task`,
`config.classify` (a classify run's, `charlm.classify.ClassifyOptions`). Users,
the CLI and `charlm.train` name options flat (hidden_size, lr, time_budget), so a config is built and
changed by flat names, each routed to its section by OPTIONS:

    config = TrainConfig.from_options(corpus=("text.txt",), hidden_size=256, lr=3e-3)
    wider = config.replace(hidden_size=512)        # a new config; a misspelt name is a ConfigError
    config.model.hidden_size, config.options()     # read by section, or all options by flat name

checkpoint.json stores `to_dict()` as "train": {"data": {...}, "tokenizer": {...}, ...}, each section's
fields by name. `from_dict` reads that and the flat dict every run before the sections wrote; a key
it does not know, in either form, is refused.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from charlm.classify import ClassifyOptions
from charlm.errors import ConfigError
from charlm.models import MODEL_KINDS, ModelConfig
from charlm.training.sections import (
    DEFAULT_TIME_BUDGET,
    ENCODING_ERRORS,
    LEVELS,
    MAX_SEED,
    OPTIMIZERS,
    PRETOKENIZERS,
    SCHEDULES,
    SUBWORD_MODELS,
    TAG_COLUMNS,
    TAG_SCHEMES,
    WORD_MAX_VOCAB,
    DataOptions,
    ModelOptions,
    OptimOptions,
    RunOptions,
    TaggingOptions,
    TaskOptions,
    TokenizerOptions,
)

__all__ = [
    "DEFAULTS", "DEFAULT_ORDER", "DEFAULT_TIME_BUDGET", "ENCODING_ERRORS", "LEVELS", "LEVEL_DEFAULTS", "LEVEL_FIELDS",
    "LIMITS", "MAX_SEED", "MODEL_KINDS", "NGRAM_OPTIONS", "OPTIMIZERS", "OPTIONS", "PRETOKENIZERS", "RESUMABLE",
    "SCHEDULES", "SECTIONS", "SUBWORD_MODELS", "TAG_COLUMNS", "TAG_SCHEMES", "WORD_MAX_VOCAB",
    "TrainConfig", "check_ngram_options", "flat_options", "resumed_config",
]  # fmt: skip

# The sections, in the order checkpoint.json lists them.
SECTIONS: dict[str, type[Any]] = {
    "data": DataOptions,
    "tokenizer": TokenizerOptions,
    "model": ModelOptions,
    "optim": OptimOptions,
    "run": RunOptions,
    "task": TaskOptions,
    "tagging": TaggingOptions,
    "classify": ClassifyOptions,  # --model classify only (charlm.training.tasks.classify)
}
# The one field whose flat option name is not its own: --model is the model's kind.
_RENAMED = {("model", "kind"): "model"}
# Every option by its flat name: (section, field).
OPTIONS: dict[str, tuple[str, str]] = {
    _RENAMED.get((section, f.name), f.name): (section, f.name)
    for section, kind in SECTIONS.items()
    for f in fields(kind)
}
assert len(OPTIONS) == sum(len(fields(kind)) for kind in SECTIONS.values()), "two sections share an option name"
_FLAT_NAME = {place: name for name, place in OPTIONS.items()}
# Every option's default by its flat name (corpus has none).
DEFAULTS: dict[str, Any] = {
    _FLAT_NAME[section, f.name]: f.default
    for section, kind in SECTIONS.items()
    for f in fields(kind)
    if (section, f.name) != ("data", "corpus")
}
_TUPLES = ("corpus", "valid", "adaptive_cutoffs", "embeddings")  # stored as JSON lists

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
# Options `with_level_defaults` may fill; any still None after autosize is chosen there.
LEVEL_FIELDS = (
    "emb_size", "bptt", "tie_weights", "dropout_input", "dropout_embed", "weight_drop", "ar", "tar", "adaptive_softmax",
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run, by section; stored in checkpoint.json.

    Build one with `from_options` (flat names, as the CLI and `charlm.train` take them)
    or from its sections; change one with `replace` (flat names)."""

    data: DataOptions
    tokenizer: TokenizerOptions = field(default_factory=TokenizerOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    run: RunOptions = field(default_factory=RunOptions)
    task: TaskOptions = field(default_factory=TaskOptions)
    tagging: TaggingOptions = field(default_factory=TaggingOptions)
    classify: ClassifyOptions = field(default_factory=ClassifyOptions)

    def __post_init__(self) -> None:
        self.model_config(vocab_size=2, check_only=True)  # checks the model options early

    @classmethod
    def from_options(cls, corpus: Sequence[str], **options: Any) -> TrainConfig:
        """A config from flat option names (corpus=..., hidden_size=8, lr=1e-3); the rest take their defaults.
        An unknown name is a one-line ConfigError naming the closest option."""
        by_section = _route({"corpus": corpus, **options})
        data = DataOptions(**by_section.pop("data"))
        return cls(data, **{name: SECTIONS[name](**values) for name, values in by_section.items()})

    def replace(self, **options: Any) -> TrainConfig:
        """This config with the options named (flat names) changed; the others kept."""
        by_section = _route(options)
        changed = {name: dataclasses.replace(getattr(self, name), **values) for name, values in by_section.items()}
        return dataclasses.replace(self, **changed)

    def options(self) -> dict[str, Any]:
        """Every option by its flat name (tuples kept), as `from_options` takes them."""
        return {_FLAT_NAME[name, k]: v for name in SECTIONS for k, v in vars(getattr(self, name)).items()}

    @property
    def resolved(self) -> bool:
        """True once every option left to charlm (None) has been chosen (`charlm.training.autosize.resolve`)."""
        m, t = self.model, self.task
        if None in (m.hidden_size, m.dropout, t.batch_size, self.optim.lr):
            return False
        given = self.options()
        return all(given[name] is not None for name in LEVEL_FIELDS)

    def with_level_defaults(self) -> TrainConfig:
        """Options left open that depend only on the level filled in (`LEVEL_DEFAULTS`); a word
        embedding takes the hidden width once that is known. Explicit options are kept."""
        given = self.options()
        fill = {k: v for k, v in LEVEL_DEFAULTS[self.tokenizer.level].items() if given[k] is None}
        c = self.replace(**fill) if fill else self
        if c.model.emb_size is None and c.model.hidden_size is not None:  # no fixed embedding size: the width
            c = c.replace(emb_size=c.model.hidden_size)
        return c

    def model_config(self, vocab_size: int, check_only: bool = False) -> ModelConfig:
        """The model's shape; `check_only` stands in for options not chosen yet, to check the others."""
        c = self.with_level_defaults()
        if not (check_only or c.resolved):
            raise ValueError(
                "the options left to charlm are not chosen yet; call charlm.training.autosize.resolve first"
            )
        m = c.model
        if m.adaptive_softmax and m.adaptive_cutoffs is None and not check_only:
            raise ValueError(
                "adaptive softmax cutoffs are not chosen yet; call charlm.training.autosize.output_layer first"
            )
        return ModelConfig(
            vocab_size=vocab_size,
            cell=m.cell,
            num_layers=m.num_layers,
            hidden_size=m.hidden_size or 1,
            emb_size=m.emb_size or 1,
            dropout=m.dropout or 0.0,
            dropout_input=m.dropout_input or 0.0,
            dropout_embed=m.dropout_embed or 0.0,
            weight_drop=m.weight_drop or 0.0,
            locked_dropout=m.locked_dropout,
            tie_weights=bool(m.tie_weights),
            adaptive_cutoffs=m.adaptive_cutoffs if m.adaptive_softmax and not check_only else None,
        )

    @property
    def ngram_order(self) -> int:
        """The order of a Kneser-Ney run: --order, else the level's default."""
        return self.model.order if self.model.order is not None else DEFAULT_ORDER[self.tokenizer.level]

    @property
    def out_dir(self) -> Path:
        """--out, or checkpoints/<name of the first corpus path> ("." is named after the directory it is)."""
        if self.run.out:
            return Path(self.run.out)
        first = Path(self.data.corpus[0])
        name = first.stem if first.suffix else first.name
        if name in ("", ".", ".."):
            name = first.resolve().name or "corpus"
        return Path("checkpoints") / name

    def to_dict(self) -> dict[str, Any]:
        """The sections as JSON data (checkpoint.json's "train"), tuples as lists."""
        return {name: {k: _listed(v) for k, v in asdict(getattr(self, name)).items()} for name in SECTIONS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from `to_dict` data, or from the flat dict of runs written before the sections; unknown
        keys are refused, as `ModelConfig.from_dict` does."""
        given = flat_options(d)
        given.setdefault("adaptive_softmax", False)  # runs that predate it have a full softmax
        return cls.from_options(**{"corpus": (), **given})

    def explicit_options(self) -> dict[str, Any]:
        """The options that differ from the defaults: what a library caller set (corpus and out always count)."""
        return {k: v for k, v in self.options().items() if k in ("corpus", "out") or v != DEFAULTS.get(k)}


def flat_options(d: Mapping[str, Any]) -> dict[str, Any]:
    """The options of checkpoint.json's "train" by flat name, from either form it takes: sections (a dict
    per section) or the flat dict of earlier runs. A key no option has is a ConfigError."""
    if any(isinstance(v, Mapping) for v in d.values()):  # sectioned: no flat option's value is a mapping
        flat: dict[str, Any] = {}
        unknown = [k for k, v in d.items() if k not in SECTIONS or not isinstance(v, Mapping)]
        for name, values in d.items():
            if name in SECTIONS and isinstance(values, Mapping):
                unknown += [f"{name}.{k}" for k in values if (name, k) not in _FLAT_NAME]
                flat.update((_FLAT_NAME[name, k], v) for k, v in values.items() if (name, k) in _FLAT_NAME)
    else:
        flat, unknown = dict(d), [k for k in d if k not in OPTIONS]
    if unknown:
        raise ConfigError(f"unknown training options {sorted(unknown)}; was this checkpoint made by a newer charlm?")
    return flat


def _route(options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat options grouped by section: {section: {field: value}}, JSON lists back to tuples; an unknown
    name is a one-line ConfigError with the closest option."""
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in options.items():
        if name not in OPTIONS:
            close = difflib.get_close_matches(name, list(OPTIONS), n=1)
            hint = f"did you mean {close[0]}?" if close else f"the training options are {', '.join(sorted(OPTIONS))}"
            raise ConfigError(f"unknown training option {name!r}; {hint}")
        section, key = OPTIONS[name]
        by_section.setdefault(section, {})[key] = tuple(value) if name in _TUPLES and value is not None else value
    return by_section


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

    `stored` is checkpoint.json's "train" (either form `TrainConfig.from_dict` reads);
    `given` holds only the options the caller set explicitly, by flat name (the
    command line's, or `TrainConfig.explicit_options()` for a library call). Options
    in RESUMABLE take the given value; the limits change only as a group (naming one
    replaces all three); any other option must equal the run's own value (restating
    it is fine), else a one-line ConfigError names the flags (`flag_names` maps
    option names to the flags shown).
    """
    run = TrainConfig.from_dict(stored)
    own = run.options()
    names = flag_names or {}
    fixed = sorted(k for k, v in given.items() if k not in RESUMABLE and _listed(own.get(k, v)) != _listed(v))
    if fixed:
        flags = ", ".join(names.get(k, "--" + k.replace("_", "-")) for k in fixed)
        raise ConfigError(
            f"{flags} cannot change when resuming (the run keeps its options); "
            "drop them, or start a new run with --overwrite"
        )
    changes = {k: v for k, v in given.items() if k in RESUMABLE}
    if changes.keys() & set(LIMITS):
        changes = {**dict.fromkeys(LIMITS), **changes}
    return run.replace(**changes)
