"""Before a run writes anything: its data from the token cache, and the checks on its output directory.

prepare_data(config)     the training and validation ids (memory maps of the token cache), the tokenizer
shared_data(...)         the same in a torchrun job: rank 0 tokenizes first, the others open its entry
check_out_dir(...)       refuse a directory the run may not use (changes nothing on disk)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.checkpoint import store as ckpt
from charlm.data import Tokenizer, default_cache_dir, tokenized_corpus
from charlm.errors import CheckpointError, ConfigError
from charlm.evaluation import context_id, evaluate_ids
from charlm.runtime import DistContext
from charlm.training.config import TrainConfig


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
        validation, the baselines and the n-gram task all score here, so their figures compare."""
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


def token_counts(ids: np.ndarray, vocab: int, chunk: int = 1 << 24) -> np.ndarray:
    """How often each id occurs (V,) int64, counted a chunk at a time: a memory-mapped corpus is never
    widened whole (np.bincount would make an int64 copy of it)."""
    counts = np.zeros(vocab, dtype=np.int64)
    for i in range(0, len(ids), chunk):
        counts += np.bincount(np.asarray(ids[i : i + chunk]), minlength=vocab)[:vocab]
    return counts


def cache_dir(config: TrainConfig) -> Path:
    """--cache-dir, else $CHARLM_CACHE_DIR, else the user's cache (~/.cache/charlm/tokens)."""
    return Path(config.data.cache_dir or os.environ.get("CHARLM_CACHE_DIR") or default_cache_dir())


def prepare_data(
    config: TrainConfig, tokenizer: Tokenizer | None = None, progress: Callable[[str, int, int], None] | None = None
) -> PreparedData:
    """The ids of the run's corpus from the token cache, tokenized into it the first time.

    The tokenizer is fitted on the training part only (unless given: a resumed
    run's), the split and the cache are `charlm.data.tokcache`'s, and the run's own
    output directory is never read as corpus.
    """
    tc = tokenized_corpus(
        config.data.corpus,
        valid=config.data.valid,
        valid_fraction=config.data.valid_fraction,
        level=config.tokenizer.level,
        tokenizer_options=config.tokenizer.for_tokenizer(),
        tokenizer=tokenizer,
        encoding_errors=config.data.encoding_errors,
        cache_dir=cache_dir(config),
        exclude=[config.out_dir],
        progress=progress,
    )
    train, valid = tc.train, tc.valid
    if config.data.reverse:  # a backward LM reads each part's tokens last to first (a copy in memory)
        train, valid = np.ascontiguousarray(train[::-1]), np.ascontiguousarray(valid[::-1])
    return PreparedData(
        tc.tokenizer, train, valid, tc.valid_chars, tc.valid_bytes, tc.valid_oov,
        tc.fingerprint, tc.valid_fingerprint, tc.path, tc.reused,
    )  # fmt: skip


def shared_data(
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


def check_resume_or_overwrite(resume: bool, overwrite: bool) -> None:
    """Refuse asking for both: a run cannot continue the run it replaces."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; choose one")


def check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a directory the run may not use; changes nothing on disk."""
    check_resume_or_overwrite(resume, overwrite)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory")
    if resume and not ckpt.is_checkpoint_dir(out):
        raise CheckpointError(f"nothing to resume in {out}: no checkpoint there; drop --resume to start a new run")
    if not resume and not overwrite and ckpt.holds_run(out):
        raise CheckpointError(
            f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, or --out DIR"
        )
