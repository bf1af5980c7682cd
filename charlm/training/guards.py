"""What validations tell the user about a run beyond its figures: not learning, overfitting, not worth it.

The verdicts are `charlm.training.baselines`' pure functions of the figures; this module
words them, gives each warning once a session, and decides whether overfitting stops the
run. A task whose baselines record has no "unigram" (or "kn") figure gets no warning that
needs one.
"""

from __future__ import annotations

import math

from charlm.training import baselines
from charlm.training.config import TrainConfig
from charlm.training.state import RunState


class Guards:
    """The warnings one session's validations call for (each given once), and the overfitting stop."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.warned: set[str] = set()
        self.ending = False  # the session's last validation: the guards may still warn, but nothing is left to stop

    def check(self, s: RunState, loss: float, progress: float) -> tuple[list[str], bool]:
        """(warnings, stop) after a validation of `loss`, recorded in `s` already, `progress` into the run.

        Not learning: a fair share into the run, no better than the unigram baseline.
        Overfitting: several validations since the best, the latest well above it
        (thresholds: charlm.training.baselines). The automatic stop is off when --patience is given.
        """
        out = []
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
        stop_allowed = self.config.run.patience is None and not self.ending
        verdict = baselines.overfit_verdict(s.bad_evals, loss, s.best_valid, stop_allowed)
        if verdict is None:
            return out, False
        at = f" at step {s.best_step}" if s.best_step is not None else ""
        rose = (  # a verdict implies a best above 0 (overfit_verdict)
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


def end_notes(s: RunState) -> list[str]:
    """A network that ends worse than the Kneser-Ney baseline was not worth its budget: say so, and what instead."""
    b, best = s.baselines or {}, s.best_valid
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
