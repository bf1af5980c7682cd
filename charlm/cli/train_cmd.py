"""`charlm train CORPUS...`: fit a tokenizer, train a model, keep best and last checkpoints."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.markup import escape

from charlm.checkpoint import store as ckpt
from charlm.classify import CLASS_WEIGHTS, FORMATS
from charlm.cli.common import DEVICE_HELP, Duration, domain_errors, err_console, option_table
from charlm.cli.progress import TrainDisplay
from charlm.errors import CharlmError
from charlm.models import CELLS
from charlm.runtime import PRECISIONS, DistContext
from charlm.training import (
    DEFAULTS,
    ENCODING_ERRORS,
    LEVELS,
    MAX_SEED,
    MODEL_KINDS,
    OPTIMIZERS,
    PRETOKENIZERS,
    SCHEDULES,
    SUBWORD_MODELS,
    TAG_COLUMNS,
    TAG_SCHEMES,
    TrainConfig,
    check_ngram_options,
    resumed_config,
    train,
)


def _write_plot(out: Path, quiet: bool) -> None:
    """The loss-curve picture beside the checkpoint; a plotting problem never fails a finished run."""
    from charlm.training import write_png  # matplotlib loads only here

    try:
        path = write_png(out)
    except CharlmError as exc:
        err_console.print(f"[yellow]warning:[/] no loss plot: {escape(str(exc))}", soft_wrap=True)
        return
    if not quiet:
        err_console.print(
            f"loss curves: {escape(str(path))} (charlm plot {escape(str(out))} draws them here)", soft_wrap=True
        )


_PROB = click.FloatRange(0.0, 1.0, max_open=True)
_POSITIVE = click.FloatRange(0, min_open=True)
_OPEN_UNIT = click.FloatRange(0, 1, min_open=True, max_open=True)

# Every TrainConfig option as (flags, its field, click type, help): one line each. The default
# is TrainConfig's own; a "/" in the flag makes a boolean switch.
# fmt: off
OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--out -o", "out", click.Path(path_type=str), "Checkpoint directory [default: checkpoints/<corpus name>]."),
    ("--valid", "valid", click.Path(path_type=str), "Validation file(s), repeatable [default: the end of the corpus]."),
    ("--valid-fraction", "valid_fraction", _OPEN_UNIT, "Fraction held out for validation when no --valid."),
    ("--reverse/--no-reverse", "reverse", None, "Read the text backwards: a backward LM (for contextual embeddings)."),
    ("--encoding-errors", "encoding_errors", click.Choice(ENCODING_ERRORS), "replace: bad bytes become U+FFFD."),
    ("--level", "level", click.Choice(LEVELS), "Tokenizer: characters, words or SentencePiece subwords."),
    ("--min-freq", "min_freq", click.IntRange(1), "word: rarer words become <unk> [default: 2 with punct, else 1]."),
    ("--max-vocab", "max_vocab", click.IntRange(3), "word: most types kept, specials included [default: 50000]."),
    ("--pretokenize", "pretokenize", click.Choice(PRETOKENIZERS), "word: whitespace (tokenized text) or punct (raw)."),
    ("--subword-vocab-size", "subword_vocab_size", click.IntRange(1), "subword: SentencePiece vocabulary size."),
    ("--subword-model", "subword_model", click.Choice(SUBWORD_MODELS), "subword: SentencePiece model type."),
    ("--model", "model", click.Choice(MODEL_KINDS),
     "rnn: a recurrent LM; kn: a Kneser-Ney LM; tag: a sequence tagger, classify: a text classifier (labelled DATA)."),
    ("--order", "order", click.IntRange(1), "kn: n-gram order [default: 7 for char, 5 for word and subword]."),
    ("--cell", "cell", click.Choice(CELLS), "Recurrent cell (rnn = Elman tanh)."),
    ("--layers", "num_layers", click.IntRange(1), "Stacked recurrent layers."),
    ("--hidden", "hidden_size", click.IntRange(1), "Hidden units per layer [default: chosen for the budget here]."),
    ("--emb", "emb_size", click.IntRange(1), "Embedding size [default: 64; word: = --hidden]."),
    ("--dropout", "dropout", _PROB, "Dropout between layers and on the output [default: by passes over the text]."),
    ("--dropout-input", "dropout_input", _PROB, "Dropout on the embeddings [default: 0; word: by passes]."),
    ("--dropout-embed", "dropout_embed", _PROB, "Drop whole types from the embedding [default: 0; word: by passes]."),
    ("--weight-drop", "weight_drop", _PROB, "DropConnect on hidden-to-hidden weights [default: 0; word: by passes]."),
    ("--locked-dropout/--no-locked-dropout", "locked_dropout", None, "One dropout mask per sequence (variational)."),
    ("--tie-weights/--no-tie-weights", "tie_weights", None, "Share embedding and decoder weights [default: word]."),
    ("--adaptive-softmax/--no-adaptive-softmax", "adaptive_softmax", None,
     "Adaptive softmax output [default: word vocabularies of 3000+]."),
    ("--ar", "ar", click.FloatRange(0), "Activation regularisation weight, AWD-LSTM [default: 0; word: 1]."),
    ("--tar", "tar", click.FloatRange(0), "Temporal activation regularisation, AWD-LSTM [default: 0; word: 1]."),
    ("--optimizer", "optimizer", click.Choice(OPTIMIZERS), "Optimiser."),
    ("--lr", "lr", _POSITIVE, "Peak learning rate [default: 5e-3; word: 3e-3]."),
    ("--weight-decay", "weight_decay", click.FloatRange(0), "Decoupled weight decay (AdamW) or L2 (SGD)."),
    ("--momentum", "momentum", click.FloatRange(0, 1, max_open=True), "sgd only."),
    ("--clip", "clip", click.FloatRange(0), "Clip the gradient norm to this (0: off)."),
    ("--batch-size -b", "batch_size", click.IntRange(1), "Parallel streams [default: 16 on a CPU, 64 on a GPU]."),
    ("--bptt -t", "bptt", click.IntRange(1), "Window length of truncated BPTT [default: 100; word: 50]."),
    ("--bptt-jitter/--no-bptt-jitter", "bptt_jitter", None, "AWD-LSTM's random window lengths around --bptt."),
    ("--schedule", "schedule", click.Choice(SCHEDULES), "Learning-rate decay (plateau: when validation stalls)."),
    ("--warmup-steps", "warmup_steps", click.IntRange(0), "Linear warm-up steps [default: the first 2% of the run]."),
    ("--min-lr-ratio", "min_lr_ratio", click.FloatRange(0, 1), "cosine/linear: final lr as a fraction of --lr."),
    ("--plateau-factor", "plateau_factor", _OPEN_UNIT, "plateau: multiply the lr by this when validation stalls."),
    ("--plateau-patience", "plateau_patience", click.IntRange(0), "plateau: validations without improvement first."),
    ("--patience", "patience", click.IntRange(1), "Early stopping: validations without improvement."),
    ("--epochs", "epochs", _POSITIVE, "Stop after this many passes over the training text."),
    ("--max-steps", "max_steps", click.IntRange(1), "Stop after this many optimiser steps."),
    ("--time-budget", "time_budget", Duration(), "Stop after this time (90s, 10m, 1h); 10m when no limit is given."),
    ("--eval-interval", "eval_interval", click.IntRange(1), "Validate (and save) every N steps."),
    ("--eval-streams", "eval_streams", click.IntRange(1), "Parallel streams for validation."),
    ("--eval-tokens", "eval_tokens", click.IntRange(0), "Validation scores at most this many tokens (0: all)."),
    ("--log-interval", "log_interval", click.IntRange(1), "Log the training loss every N steps."),
    ("--sample-length", "sample_length", click.IntRange(0), "Tokens of the sample at each validation (0: none)."),
    ("--device", "device", None, DEVICE_HELP),
    (
        "--precision",
        "precision",
        click.Choice(PRECISIONS),
        "auto: bf16 (or fp16) autocast on CUDA; on a CPU bf16 where it has bf16 instructions, measures faster "
        "and learns as well as fp32 in a short trial, else fp32.",
    ),
    ("--seed", "seed", click.IntRange(0, MAX_SEED), "Random seed (weights, dropout, data order)."),
    ("--cache-dir", "cache_dir", click.Path(path_type=str), "Token cache [default: ~/.cache/charlm/tokens]."),
    ("--tag-column", "tag_column", click.Choice(TAG_COLUMNS), "tag: the CoNLL-U column to learn (upos or xpos)."),
    ("--tag-scheme", "tag_scheme", click.Choice(TAG_SCHEMES), "tag: the span scheme of the files [default: detected]."),
    ("--crf/--no-crf", "crf", None, "tag: a CRF over the tags [default: for span tags, not for POS]."),
    ("--embeddings", "embeddings", click.Path(path_type=str), "tag: a char-LM checkpoint to embed words (repeat)."),
    ("--baselines/--no-baselines", "baselines", None, "Score unigram and Kneser-Ney baselines first, to warn against."),
    ("--format", "data_format", click.Choice(FORMATS), "classify: the data's format [default: by file extension]."),
    ("--text-column", "text_column", str, "classify: CSV/JSON lines field holding the text."),
    ("--label-column", "label_column", str, "classify: CSV/JSON lines field holding the label(s)."),
    ("--label-separator", "label_separator", str, "classify: separates several labels in one field."),
    ("--multi-label/--single-label", "multi_label", None,
     "classify: several labels a text (sigmoids) [default: when some text has several]."),
    ("--pooling", "pooling", str, "classify: mean, max, last or e.g. mean+max [default: max; LM: mean+max+last]."),
    ("--lm-forward", "lm_forward", click.Path(exists=True, path_type=str),
     "classify: read the text with this charlm language model's features instead of words."),
    ("--lm-backward", "lm_backward", click.Path(exists=True, path_type=str),
     "classify: a language model trained on reversed text, read over the text reversed."),
    ("--finetune/--no-finetune", "finetune", None, "classify: train the language models too (default: frozen)."),
    ("--ngrams/--no-ngrams", "ngrams", None, "classify: add a naive Bayes model of words and word pairs."),
    ("--class-weights", "class_weights", click.Choice(CLASS_WEIGHTS), "classify: balanced weighs rare labels up."),
]
# fmt: on


def _train_ngram(
    ctx: click.Context, corpus: tuple[str, ...], overwrite: bool, quiet: bool, no_samples: bool, options: dict[str, Any]
) -> None:
    """--model kn: refuse options it would ignore (naming their flags), estimate, print one summary line."""
    given = {n for n in options if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE}
    check_ngram_options(dict.fromkeys(given), {p.name: p.opts[0] for p in ctx.command.params if p.name})
    config = TrainConfig.from_options(corpus=corpus, **options)
    display = TrainDisplay(quiet=True, samples=False)  # tokenizing progress only
    result = train(config, overwrite=overwrite, observer=display)
    if quiet:
        return
    [rec] = result.history
    err_console.print(
        f"charlm train -> {escape(str(config.out_dir))}: Kneser-Ney {rec['order']}-gram "
        f"({config.tokenizer.level} level, "
        f"vocabulary {result.vocab_size:,}) from {rec['train_tokens']:,} tokens in {rec['estimate_seconds']:.1f}s; "
        f"n-grams per order {' / '.join(f'{n:,}' for n in rec['ngrams'])}",
        soft_wrap=True,
    )
    if rec.get("sample") and not no_samples:
        text = rec["sample"]["prompt"] + rec["sample"]["text"]
        shown = "\n".join(f"  | {line}" for line in text.rstrip("\n").split("\n"))
        err_console.print(f"sample:\n{shown}", markup=False, highlight=False, soft_wrap=True)
    click.echo(
        f"validation: loss {rec['valid_loss']:.4f} nats/token, perplexity {rec['valid_ppl']:.2f}, "
        f"{rec['valid_bpc']:.4f} bits/char ({rec['valid_tokens']:,} tokens); "
        f"model: {config.out_dir / ckpt.ARPA}"
    )


def _option_rows() -> list[tuple[str, dict[str, Any]]]:
    """OPTIONS as `option_table` rows, each defaulting to TrainConfig's value."""
    rows = []
    for flags, name, kind, help_text in OPTIONS:
        many = name in ("valid", "embeddings")
        default = None if many else DEFAULTS[name]
        typed = {"type": kind} if kind is not None else {}
        shown = default is not None and name != "out"
        rows.append(
            (f"{flags} {name}", dict(default=default, show_default=shown, multiple=many, help=help_text, **typed))
        )
    return rows


@click.command("train")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=str))
@option_table(_option_rows())
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a different run already in --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display, samples or summary (for scripts).")
@click.option("--no-samples", is_flag=True, help="Do not print the sample generated at each validation.")
@click.pass_context
@domain_errors
def train_command(
    ctx: click.Context,
    corpus: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    quiet: bool,
    no_samples: bool,
    **options: Any,
) -> None:
    """Train a language model on CORPUS (text files or directories), or with --model tag or --model classify
    a tagger or a text classifier on labelled data.

    \b
    Examples:
      charlm train corpora/tinyshakespeare.txt --time-budget 5m
      charlm train corpora/ud-english-ewt/train-slice.conllu --model tag --valid corpora/ud-english-ewt/dev-slice.conllu
      charlm train corpora/rt-polarity-sample/train.tsv --model classify --time-budget 5m
    """
    options["valid"] = tuple(options.pop("valid"))
    options["embeddings"] = tuple(options.pop("embeddings"))
    if options["model"] == "kn" and not resume:
        _train_ngram(ctx, corpus, overwrite, quiet, no_samples, options)
        return
    if resume:
        # The run keeps its options; the library's rule says what the command line may change.
        given = {n: v for n, v in options.items() if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE}
        out = TrainConfig.from_options(corpus=corpus, out=options["out"]).out_dir
        stored = ckpt.open_checkpoint(out).train_config if ckpt.is_checkpoint_dir(out) else None
        if stored is not None:
            flags = {p.name: p.opts[0] for p in ctx.command.params if p.name}
            config = resumed_config(stored, {"corpus": corpus, "out": options["out"], **given}, flags)
        else:  # the trainer says there is nothing to resume
            config = TrainConfig.from_options(corpus=corpus, **options)
    else:
        config = TrainConfig.from_options(corpus=corpus, **options)
    try:
        result = train(config, resume=resume, overwrite=overwrite, observer=TrainDisplay(quiet, samples=not no_samples))
    except KeyboardInterrupt:
        # A second signal: the first one already asked the trainer to save and stop.
        err_console.print("interrupted; the last saved checkpoint is kept")
        ctx.exit(130)
    if DistContext.from_env().is_main:  # in a torchrun job rank 0 alone writes, as for the checkpoint
        _write_plot(result.out, quiet)
    if result.signal is not None:
        if not quiet:
            err_console.print(f"stopped by {result.signal} at step {result.step}; saved, continue with --resume")
        ctx.exit(128 + int(getattr(signal, result.signal)))
