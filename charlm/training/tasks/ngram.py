"""`--model kn`: a Kneser-Ney n-gram model, estimated in one pass into a checkpoint directory.

The same data as the recurrent task (`charlm.training.prepare.prepare_data`: the token
cache's training and validation ids, the tokenizer fitted on the training part), the
same directory protocol (`charlm.checkpoint.store.RunWriter`: a new run is staged and
swapped in whole), and the same validation figure and sample (`charlm.training.validation`,
with --eval-tokens), so a KN run's metrics.jsonl compares with an RNN run's row by row.
The model is stored as `model.arpa.gz` (ARPA text, readable by KenLM). Counting is not
a gradient step: there is no optimiser, no loop and no resumable state, so `--resume`
is refused, and `train()` runs `estimate` instead of the loop.
"""

from __future__ import annotations

import time
from typing import Any

from charlm.checkpoint import store as ckpt
from charlm.errors import ConfigError
from charlm.models import KneserNeyModel
from charlm.training.config import TrainConfig, check_ngram_options
from charlm.training.prepare import check_out_dir, prepare_data
from charlm.training.state import TrainResult
from charlm.training.validation import valid_figures, validation_sample

NO_RESUME = "a Kneser-Ney run has no training state to resume; train it again (it takes seconds)"


def train_ngram(
    config: TrainConfig, *, resume: bool = False, overwrite: bool = False, observer: Any = None
) -> tuple[KneserNeyModel, dict[str, Any]]:
    """Estimate the run's model, validate it, write the checkpoint: (model, its validation record).

    Options a KN run would ignore (set to non-default values) are refused with one ConfigError.
    `observer.on_prepare` (if any) hears the tokenizing progress and `observer.on_eval` the record.
    `charlm.training.train` is the way in for a run; this is its n-gram task, for callers who want the model.
    """
    if resume:
        raise ConfigError(NO_RESUME)
    check_ngram_options(config.explicit_options())
    out = config.out_dir
    check_out_dir(out, resume=False, overwrite=overwrite)
    t0 = time.perf_counter()
    data = prepare_data(config, None, getattr(observer, "on_prepare", None))
    tok = data.tokenizer
    with ckpt.RunWriter(out) as writer:
        model = KneserNeyModel.estimate(data.train_ids, tok.vocab_size, config.ngram_order)
        writer.begin(model.config, tok, config.to_dict())
        estimated = time.perf_counter() - t0
        score = data.score_validation(model, config.run.eval_tokens)
        rec: dict[str, Any] = {
            "type": "valid",
            "step": 0,
            "epoch": 0,
            "model": "kn",
            "order": model.order,
            "ngrams": model.num_ngrams,
            "train_tokens": len(data.train_ids),
            **valid_figures(score),
            "estimate_seconds": round(estimated, 3),
            "elapsed": round(time.perf_counter() - t0, 3),
        }
        sample = validation_sample(model, tok, data.valid_ids, config, model.device)
        if sample:
            rec["sample"] = sample
        writer.save_ngram(model, tok, [rec])
    if observer is not None:
        observer.on_eval(rec)
    return model, rec


def estimate(config: TrainConfig, resume: bool, overwrite: bool, observer: Any) -> TrainResult:
    """`train()` for `--model kn`: the n-gram task run whole, as a `TrainResult` with status "estimated"."""
    t0 = time.perf_counter()
    model, rec = train_ngram(config, resume=resume, overwrite=overwrite, observer=observer)
    loss, seconds = rec["valid_loss"], time.perf_counter() - t0
    return TrainResult(
        config.out_dir, "estimated", 0, 0, loss, loss, None, seconds, rec["train_tokens"] / seconds, [rec],
        vocab_size=model.vocab_size,
    )  # fmt: skip
