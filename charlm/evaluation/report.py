"""The figures of several files under one checkpoint, each file scored one or more ways side by side.

A `Report` is what `charlm perplexity` prints (a table, or its `to_dict()` as JSON) and
what the library returns: the plain figures of each file (`perplexity_report`), or
several figures per file compared (`mixture_report`: each model alone and their mixture;
`dynamic_report`: the static and the dynamic figure). A file that cannot be read is
reported with its error, and the others are still scored; totals sum the files read.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.data import Tokenizer
from charlm.errors import CorpusError
from charlm.evaluation.dynamic import RMS_TOKENS, DynamicOptions, evaluate_file_dynamic, gradient_rms
from charlm.evaluation.metrics import TextScore, total
from charlm.evaluation.mixture import choose_weight, evaluate_file_mixture
from charlm.evaluation.scoring import evaluate_file
from charlm.evaluation.streams import Scoring
from charlm.models import LanguageModel

Progress = Callable[[int], None]  # called with the bytes of each piece of a file scored
Scorer = Callable[[Progress | None], list[TextScore]]  # scores one file, reporting its progress
Runner = Callable[[Path, Scorer], list[TextScore]]  # runs one file's scoring, e.g. under a progress bar


def _plainly(path: Path, score: Scorer) -> list[TextScore]:
    return score(None)


@dataclass(frozen=True)
class FileScores:
    """One file's figures (one per way it was scored), or why it could not be read."""

    path: Path
    scores: tuple[TextScore, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Report:
    """The figures of `files` under the model of `checkpoint` (its `which` weights), scored as `scoring` says.

    keys: the ways each file was scored, when compared ("checkpoint", "interpolate", "mixture" or "static",
    "dynamic"); () for the plain figure. labels: what a reader sees for each ("RNN", "KN 5-gram", "mix w=0.3").
    settings: the comparison's parameters under its name ({"interpolate": {...}}); note: one line on them.
    """

    checkpoint: str
    which: str
    level: str
    vocab_size: int
    scoring: Scoring
    files: tuple[FileScores, ...]
    keys: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def failed(self) -> int:
        """Files that could not be scored."""
        return sum(f.error is not None for f in self.files)

    @property
    def totals(self) -> tuple[TextScore, ...] | None:
        """The figures of the files read taken together, one per way of scoring; None when none was read."""
        good = [f.scores for f in self.files if f.error is None]
        return tuple(total(s[i] for s in good) for i in range(len(good[0]))) if good else None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON data (floats may be NaN where a figure is undefined)."""
        head = {
            "checkpoint": self.checkpoint,
            "which": self.which,
            "level": self.level,
            "vocab_size": self.vocab_size,
            "protocol": self.scoring.to_dict(),
        }
        totals = self.totals
        if not self.keys:
            return {
                **head,
                "files": [{"path": str(f.path), **self._plain(f)} for f in self.files],
                "total": totals[0].to_dict() if totals else None,
            }
        return {
            **head,
            **self.settings,
            "labels": dict(zip(self.keys, self.labels)),
            "files": [{"path": str(f.path), **self._keyed(f)} for f in self.files],
            "total": {k: s.to_dict() for k, s in zip(self.keys, totals)} if totals else None,
        }

    @staticmethod
    def _plain(f: FileScores) -> dict[str, Any]:
        return f.scores[0].to_dict() if f.error is None else {"error": f.error}

    def _keyed(self, f: FileScores) -> dict[str, Any]:
        return {k: s.to_dict() for k, s in zip(self.keys, f.scores)} if f.error is None else {"error": f.error}


def _score_files(
    files: Sequence[Path], score: Callable[[Path, Progress | None], list[TextScore]], each: Runner
) -> tuple[FileScores, ...]:
    out = []
    for path in files:
        try:
            out.append(FileScores(path, tuple(each(path, functools.partial(score, path)))))
        except CorpusError as exc:
            out.append(FileScores(path, error=str(exc)))
    return tuple(out)


def _keywords(scoring: Scoring) -> dict[str, Any]:
    """`scoring` as the keywords the evaluate_* functions take."""
    return {f.name: getattr(scoring, f.name) for f in dataclasses.fields(scoring)}


@dataclass(frozen=True)
class Source:
    """What is scored: a checkpoint's model (`which` weights) and tokenizer, and how its files are read."""

    checkpoint: str
    which: str
    model: LanguageModel
    tokenizer: Tokenizer
    scoring: Scoring = Scoring()
    errors: str = "strict"  # the files' encoding errors: strict or replace
    each: Runner = _plainly

    def report(
        self, files: Sequence[Path], score: Callable[[Path, Progress | None], list[TextScore]], **rest: Any
    ) -> Report:
        """Each file scored by `score(path, progress)`, under `each`; `rest`: the comparison's Report fields."""
        t = self.tokenizer
        scored = _score_files(files, score, self.each)
        return Report(self.checkpoint, self.which, t.kind, t.vocab_size, self.scoring, scored, **rest)


def perplexity_report(source: Source, files: Sequence[Path]) -> Report:
    """The plain figures of each file: `evaluate_file`."""
    s = source

    def score(path: Path, progress: Progress | None) -> list[TextScore]:
        return [evaluate_file(s.model, s.tokenizer, path, errors=s.errors, progress=progress, **_keywords(s.scoring))]

    return s.report(files, score)


def mixture_report(
    source: Source, other: LanguageModel, files: Sequence[Path], weight: float, *, other_path: str, chosen: str
) -> Report:
    """Each file under the model alone, `other` alone and their mixture (1 - weight) p + weight p_other.

    other_path: where `other` comes from; chosen: how the weight was chosen (`mixture_weight`), for the report.
    """
    s = source

    def score(path: Path, progress: Progress | None) -> list[TextScore]:
        keywords = _keywords(s.scoring)
        return evaluate_file_mixture(
            s.model, other, s.tokenizer, path, [weight], errors=s.errors, progress=progress, **keywords
        )

    settings = {
        "checkpoint": other_path,
        "weight": weight,
        "weight_of": "the --interpolate model: p = (1 - w) p_checkpoint + w p_interpolate",
        "chosen": chosen,
    }
    note = f"mixture weight w = {weight:g} of {other_path} ({chosen}); p = (1 - w) p_1 + w p_2"
    labels = (s.model.describe(), other.describe(), f"mix w={weight:g}")
    keys = ("checkpoint", "interpolate", "mixture")
    return s.report(files, score, keys=keys, labels=labels, settings={"interpolate": settings}, note=note)


def mixture_weight(
    a: LanguageModel,
    b: LanguageModel,
    valid_ids: np.ndarray,
    context: int,
    scoring: Scoring,
    *,
    max_tokens: int | None,
    run: str,
) -> tuple[float, str]:
    """The weight of b in the mixture (`choose_weight`) chosen on the validation ids of the run in `run` (their
    first `max_tokens`), and how it was chosen, for `mixture_report`."""
    weight, _ = choose_weight(a, b, valid_ids, context, max_tokens=max_tokens, **_keywords(scoring))
    n = min(len(valid_ids), max_tokens or len(valid_ids))
    return weight, f"chosen on {n:,} tokens of {run}'s validation text"


def dynamic_statistics(model: LanguageModel, train_ids: np.ndarray, segment: int) -> tuple[list[torch.Tensor], str]:
    """The RMS rule's gradient statistics, gathered on the last RMS_TOKENS of a run's training ids, and where."""
    ids = train_ids[max(0, len(train_ids) - RMS_TOKENS) :]
    return gradient_rms(model, ids, segment), f"the last {len(ids):,} tokens of the run's training text"


def dynamic_report(
    source: Source,
    files: Sequence[Path],
    options: DynamicOptions,
    rms: list[torch.Tensor] | None = None,
    rms_source: str = "",
) -> Report:
    """Each file's static and dynamic figures (`evaluate_file_dynamic`); rms: `dynamic_statistics` for the RMS
    rule, gathered on `rms_source`."""
    s = source

    def score(path: Path, progress: Progress | None) -> list[TextScore]:
        keywords = _keywords(s.scoring)
        return list(
            evaluate_file_dynamic(
                s.model, s.tokenizer, path, options, errors=s.errors, progress=progress, rms=rms, **keywords
            )
        )

    how = "SGD on each segment's mean NLL after scoring it, eval mode, state carried (Krause et al.)"
    if options.rule == "rms":
        how = (
            "each segment's mean-NLL gradient divided by its RMS on the training text, then a pull toward "
            f"the trained weights in proportion to that RMS (Krause et al.); statistics from {rms_source}"
        )
    settings = {
        "lr": options.lr,
        "segment": options.segment,
        "decay": options.decay,
        "rule": options.rule,
        "how": how,
        "scoring": "static as plain perplexity (protocol); dynamic one exact stream",
    }
    note = (
        f"dynamic: one {options.rule.upper()} step (lr {options.lr:g}"
        + (f", decay {options.decay:g}" if options.decay else "")
        + f") after each {options.segment}-token segment, one stream; static as plain perplexity"
    )
    keys = ("static", "dynamic")
    return s.report(files, score, keys=keys, labels=keys, settings={"dynamic": settings}, note=note)
