"""Opening a classify run: the labelled data, the language models to read, the options charlm chooses, the task.

What charlm chooses when left open, the same rule for every data set (not tuned to one):

    --hidden      128 per direction up to 20,000 training texts, 256 up to 200,000, 384 beyond
    --emb         100 (the word embedding; each word also reads its characters through a 64-wide CNN)
    --dropout     0.5 (on the word inputs and before the output: small labelled sets overfit first)
    --lr          2e-3 (1e-3 when language models are fine-tuned);  --batch-size 32
    --pooling     max over a BiLSTM's states; mean+max+last over language-model features
    how long      a run limited by time alone reads its texts at most 20 times (100 when only a head over
                  frozen language models learns: its steps cost ~1/100), best keeping the best validation,
                  and validates about once an epoch (every 25 to 250 steps)
"""

from __future__ import annotations

import random
from typing import Any

import torch

from charlm.checkpoint import CheckpointInfo, load_for_inference, locate
from charlm.classify import ClassifierVocab, Example, read_examples
from charlm.errors import ConfigError, CorpusError
from charlm.models import ClassifierConfig, ModelConfig, RNNLanguageModel, TextClassifier, reader_tensors
from charlm.runtime import DistContext
from charlm.training.config import DEFAULTS, TrainConfig
from charlm.training.task import OpenedTask
from charlm.training.tasks.classify import ClassifyTask

MAX_PASSES = 20  # a run limited by time alone reads its texts at most this often ...
MAX_PASSES_FROZEN = 100  # ... or this often when only a head over frozen features learns (a pass costs ~1/100)
# Options of language-model runs that a classifier has no use for: given, they are refused, not ignored.
LM_ONLY = frozenset(
    {
        "level", "min_freq", "max_vocab", "pretokenize", "subword_vocab_size", "subword_model", "encoding_errors",
        "cache_dir", "dropout_input", "dropout_embed", "weight_drop", "locked_dropout", "tie_weights",
        "adaptive_softmax", "adaptive_cutoffs", "bptt", "bptt_jitter", "ar", "tar", "eval_streams", "eval_tokens",
        "sample_length",
    }
)  # fmt: skip


def check_options(config: TrainConfig) -> None:
    """Refuse the language-model options a classify run would ignore, naming their flags."""
    ignored = sorted(k for k in config.explicit_options() if k in LM_ONLY)
    if ignored:
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        raise ConfigError(f"{flags} {'does' if len(ignored) == 1 else 'do'} not apply to --model classify; drop them")


def read_data(config: TrainConfig) -> tuple[list[Example], list[Example], str]:
    """(train, valid, where valid came from): every training file, and --valid files or a held-out share."""
    c = config.classify
    train = [e for path in config.data.corpus for e in read_examples(path, c.data_format, c.columns)]
    if config.data.valid:
        valid = [e for path in config.data.valid for e in read_examples(path, c.data_format, c.columns)]
        return train, valid, ", ".join(config.data.valid)
    if len(train) < 2:
        raise CorpusError(f"{config.data.corpus[0]} holds {len(train)} example; give at least 2, or --valid FILE")
    shuffled = list(train)
    random.Random(config.run.seed).shuffle(shuffled)
    n_valid = max(1, round(config.data.valid_fraction * len(shuffled)))
    share = f"{100 * config.data.valid_fraction:g}% of the training texts, drawn by --seed"
    return shuffled[n_valid:], shuffled[:n_valid], share


def check_labels(train: list[Example], valid: list[Example], labels: list[str], multi: bool, name: str) -> None:
    """A single-label run refuses a text with several labels; validation may use only the training labels."""
    if not multi:
        several = next((e for e in train + valid if len(e.labels) > 1), None)
        if several is not None:
            raise CorpusError(
                f"{name}, line {several.line}: several labels ({', '.join(several.labels)}) in a single-label run; "
                "drop --single-label, or give one label a text"
            )
    known = set(labels)
    stray = next((e for e in valid if any(x not in known for x in e.labels)), None)
    if stray is not None:
        bad = next(x for x in stray.labels if x not in known)
        raise CorpusError(
            f"validation line {stray.line}: label {bad!r} never occurs in the training data; "
            "add training texts with it, or drop the line"
        )


def language_models(config: TrainConfig) -> list[tuple[str, RNNLanguageModel, Any]]:
    """(direction, model, tokenizer) of each --lm-forward/--lm-backward checkpoint (recurrent ones only)."""
    out = []
    for direction, path in (("forward", config.classify.lm_forward), ("backward", config.classify.lm_backward)):
        if path:
            model, tokenizer, info = load_for_inference(path, device="cpu")
            if not isinstance(model, RNNLanguageModel):
                raise ConfigError(f"--lm-{direction} {path} holds a {info.model_kind} model; give a recurrent one")
            out.append((direction, model, tokenizer))
    return out


def choose(config: TrainConfig, n_train: int, steps_per_epoch: int) -> tuple[TrainConfig, str]:
    """The options left open (see the module doc), and what was chosen, in words."""
    c, lm = config, config.classify.uses_lm
    chosen: dict[str, Any] = {}
    if c.model.hidden_size is None and not lm:
        chosen["hidden_size"] = 128 if n_train <= 20_000 else 256 if n_train <= 200_000 else 384
    if c.model.emb_size is None and not lm:
        chosen["emb_size"] = 100
    if c.model.dropout is None:
        chosen["dropout"] = 0.5
    if c.optim.lr is None:
        chosen["lr"] = 1e-3 if c.classify.finetune else 2e-3
    if c.task.batch_size is None:
        chosen["batch_size"] = 32
    if c.classify.pooling is None:
        chosen["pooling"] = "mean+max+last" if lm else "max"
    if "eval_interval" not in c.explicit_options():
        chosen["eval_interval"] = max(25, min(DEFAULTS["eval_interval"], steps_per_epoch))
    epochs, max_steps, budget = c.run.limits
    if epochs is None and max_steps is None:
        frozen = lm and not c.classify.finetune
        chosen["epochs"], chosen["time_budget"] = float(MAX_PASSES_FROZEN if frozen else MAX_PASSES), budget
    shown = {k: v for k, v in chosen.items() if k != "time_budget"}
    return c.replace(**chosen), ", ".join(f"{k.replace('_', '-')} {v:g}" if isinstance(v, float) else
                                          f"{k.replace('_', '-')} {v}" for k, v in shown.items())  # fmt: skip


def open_classify(
    config: TrainConfig, dctx: DistContext, device: torch.device, progress: Any, info: CheckpointInfo | None
) -> OpenedTask:
    """The run's data, vocabulary and options, then the task (its model built from the run's seed)."""
    if dctx.active:
        raise ConfigError("a classify run trains in one process; run `charlm train --model classify` without torchrun")
    check_options(config)
    train, valid, valid_from = read_data(config)
    lms: list[tuple[str, RNNLanguageModel, Any]] = []
    if info is None:
        lms = language_models(config)
        labels = sorted({x for e in train for x in e.labels})
        lm_tokenizers = [(d, tok) for d, _, tok in lms]
        vocab = ClassifierVocab.fit([e.text for e in train], labels, lm_tokenizers, config.classify.ngrams)
    else:
        vocab = ClassifierVocab.load(locate(info.path, "tokenizer.json"))
    multi = config.classify.multi_label
    multi = any(len(e.labels) > 1 for e in train) if multi is None else multi
    check_labels(train, valid, vocab.labels, multi, config.data.corpus[0])
    batch = config.task.batch_size or 32
    config, chosen = choose(config, len(train), max(1, -(-len(train) // batch)))
    m, k = config.model, config.classify
    assert m.hidden_size is not None or k.uses_lm
    model_config = ClassifierConfig(
        num_labels=len(vocab.labels), multi_label=multi, encoder="lm" if k.uses_lm else "words",
        vocab_size=vocab.vocab_size, char_vocab_size=len(vocab.chars), word_emb=m.emb_size or 100,
        cell=m.cell, num_layers=m.num_layers, hidden_size=m.hidden_size or 1, pooling=str(k.pooling),
        dropout=float(m.dropout or 0.0), finetune=k.finetune,
        lm_forward=_lm_config(lms, "forward", info), lm_backward=_lm_config(lms, "backward", info),
        ngrams=len(vocab.ngrams),
    )  # fmt: skip
    torch.manual_seed(config.run.seed)
    model = TextClassifier(model_config)
    for reader, (_, lm, _) in zip(model.lms if k.uses_lm else (), lms):
        reader.load_state_dict(reader_tensors(lm))
    task = ClassifyTask(config, model, vocab, train, valid, device, _describe(model, vocab, train, valid, valid_from))
    if vocab.ngrams:
        task.stack_naive_bayes(fit_new=info is None)
    return OpenedTask(task, config, None, chosen, 0.0)


def _lm_config(lms: list[Any], direction: str, info: CheckpointInfo | None) -> dict[str, Any] | None:
    if info is not None:  # a resumed run keeps its own copy of the language models
        stored = getattr(info.model_config, f"lm_{direction}")
        return dict(stored) if stored else None
    found = [lm.config for d, lm, _ in lms if d == direction]
    return found[0].to_dict() if found and isinstance(found[0], ModelConfig) else None


def _describe(
    model: TextClassifier, vocab: ClassifierVocab, train: list[Example], valid: list[Example], valid_from: str
) -> dict[str, Any]:
    c = model.config
    counts: dict[str, int] = {}
    for e in train:
        for x in e.labels:
            counts[x] = counts.get(x, 0) + 1
    shown = ", ".join(f"{x} {counts.get(x, 0):,}" for x in vocab.labels[:8]) + (" ..." if len(vocab.labels) > 8 else "")
    kind = "multi-label" if c.multi_label else "single-label"
    lines = [
        f"  {kind} classifier, {len(vocab.labels)} labels ({shown}); {c.summary()}",
        f"  {len(train):,} training / {len(valid):,} validation texts (validation: {valid_from}); "
        f"{vocab.vocab_size:,} words, {len(vocab.chars):,} characters",
        f"  {model.num_parameters() / 1e6:.2f}M parameters ({model.num_parameters(trainable=True) / 1e6:.2f}M trained)",
    ]
    return {
        "task": "classify",
        "task_lines": lines,
        "level": "classify",
        "vocab_size": vocab.vocab_size,
        "labels": list(vocab.labels),
        "parameters": model.num_parameters(),
        "train_texts": len(train),
        "valid_texts": len(valid),
        "model": c.to_dict(),
        "warnings": [],
    }
