"""Dynamic evaluation (Krause et al., 2018): the model adapts to the text it reads.

The text is one stream (the protocol of `charlm.evaluation.scoring`: read after a line end,
every token scored, OOV counted) cut into segments of `segment` tokens. Each
segment is first scored, then the model takes one gradient step on it before the
next segment is scored; the recurrent state is carried across segments. A copy
of the model is adapted: the loaded model (and the checkpoint on disk) never
changes. The static figure is scored beside it, block by block from the same
read, exactly as `charlm perplexity` scores the file (parallel streams unless
exact), so it is the plain figure.

Decisions:
- Update rules. sgd (default): a step on the segment's mean NLL, then a uniform
  decay toward the original weights, theta <- theta - lr * grad;
  theta <- theta + decay * (theta_0 - theta). rms (Krause et al.'s rule): each
  weight's step divided by the RMS of its gradient on training text, and a decay
  in proportion to that RMS (relative to its mean, at most 1). A checkpoint
  holds no such statistics, so `gradient_rms` gathers them from the end of the
  run's training text at the start of the pass (`--dynamic-rule rms`); without
  that text the rule is refused and sgd is the fallback. The mean (not the sum)
  makes `lr` independent of `segment`.
- Eval mode: no dropout for the gradient, as the scores are taken without it
  (cuDNN's RNN has no backward in eval mode, so on CUDA the dynamic copy runs
  with cuDNN disabled).
- Speed: per segment one forward (that scores it) and one backward of the
  adapted copy, batched over the segment's tokens, with the NLL summed on the
  device; the static model runs in parallel streams over whole blocks. A segment
  cannot be split into parallel streams: its first token needs the state the
  previous segment left, under the weights its step produced. So the pass is as
  fast as one forward/backward per segment allows, and a longer segment is faster.
- The defaults (`DYNAMIC_LR`, `DYNAMIC_SEGMENT`; `RMS_LR`, `RMS_DECAY`) were
  chosen on the held-out ends of tinyshakespeare and War and Peace, and checked
  on a word model: benchmarks/results_dynamic.md.
- lr = 0 gives the static figure to float rounding (the adapted copy runs the
  gradient-enabled kernels, which differ from the grad-free ones in the last bits).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charlm.data import Tokenizer, iter_text_chunks
from charlm.errors import ConfigError
from charlm.evaluation.metrics import TextScore
from charlm.evaluation.scoring import (
    CHUNK_BYTES,
    EXACT_BLOCK,
    BlockScorer,
    StreamScorer,
    check_vocab,
    context_id,
    read_text,
)
from charlm.evaluation.streams import Scoring
from charlm.models import LanguageModel, LMOutput, State, detach_state
from charlm.runtime import eval_mode

DYNAMIC_LR = 0.3
DYNAMIC_SEGMENT = 50
DEFAULT_DECAY = 0.0
RULES = ("sgd", "rms")
RMS_LR = 1e-4
RMS_DECAY = 0.02
RMS_TOKENS = 1 << 17  # training tokens the RMS rule's statistics are gathered on (the text's end)
RMS_EPS = 1e-5  # added to the RMS of a gradient before dividing by it (Krause et al.'s epsilon)


@dataclass(frozen=True)
class DynamicOptions:
    """Segment length (tokens), step size, decay toward the original weights per segment, update rule."""

    lr: float = DYNAMIC_LR
    segment: int = DYNAMIC_SEGMENT
    decay: float = DEFAULT_DECAY
    rule: str = "sgd"

    def __post_init__(self) -> None:
        if not self.lr >= 0:
            raise ConfigError(f"--dynamic-lr must be >= 0, got {self.lr}")
        if self.segment < 1:
            raise ConfigError(f"--dynamic-segment must be at least 1, got {self.segment}")
        if not 0 <= self.decay <= 1:
            raise ConfigError(f"the decay toward the original weights must be in [0, 1], got {self.decay}")
        if self.rule not in RULES:
            raise ConfigError(f"--dynamic-rule must be one of {', '.join(RULES)}, got {self.rule!r}")


@torch.no_grad()
def gradient_rms(model: LanguageModel, ids: np.ndarray, segment: int, rows: int = 32) -> list[torch.Tensor]:
    """Krause et al.'s statistics for the RMS rule: per parameter, the root mean square of the gradient of a
    segment's mean NLL, over the segments of `ids` (training text) read as `rows` parallel streams of
    `segment`-token windows from the zero state, in eval mode. One float tensor per parameter, as
    `model.parameters()` orders them."""
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=model.device)
    n = (len(ids_t) - 1) // rows
    if n < 1:
        raise ConfigError("the training text is too short to gather gradient statistics for --dynamic-rule rms")
    x = ids_t[: rows * n].view(rows, n)  # (B, n)
    y = ids_t[1 : rows * n + 1].view(rows, n)  # (B, n)
    params = [p for p in model.parameters()]
    ms = [torch.zeros_like(p) for p in params]
    state: State | None = None
    steps = 0
    with eval_mode(model), torch.enable_grad(), _no_cudnn(params[0].device):  # type: ignore[arg-type]
        for i in range(0, n, segment):
            out = model(x[:, i : i + segment], state)
            logits, state = _logits(out), out.state  # (B, s, V)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y[:, i : i + segment].reshape(-1))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for m, g in zip(ms, grads):
                if g is not None:
                    m.addcmul_(g, g)
            state = detach_state(state)
            steps += 1
    return [(m / steps).sqrt_() for m in ms]


def _logits(out: LMOutput) -> torch.Tensor:
    assert out.logits is not None  # a forward without targets
    return out.logits


def _no_cudnn(device: torch.device) -> contextlib.AbstractContextManager:
    """cuDNN's RNN has no backward in eval mode: off on CUDA for the gradient steps."""
    return torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else contextlib.nullcontext()


class DynamicScorer(BlockScorer):
    """nll: (2,) float64, the static and the dynamic summed NLL (see the module doc).

    The static figure is `charlm.evaluation.scoring`'s (parallel streams unless `scoring` is exact), scored block
    by block beside the dynamic pass; the dynamic pass is one forward and one backward per segment."""

    def __init__(
        self,
        model: LanguageModel,
        context: int,
        options: DynamicOptions,
        scoring: Scoring | None = None,
        rms: list[torch.Tensor] | None = None,
    ) -> None:
        super().__init__(context, options.segment * max(1, EXACT_BLOCK // options.segment))  # whole segments
        self.static = StreamScorer(model, context, scoring or Scoring())
        self.dynamic = copy.deepcopy(model)
        self.dynamic.train(False)  # the static model is in eval mode: its caller's `eval_mode`
        self.params: list[torch.Tensor] = list(self.dynamic.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.origin = [p.detach() for p in model.parameters()]  # the same order: a deep copy's
        self.options = options
        self.device = self.origin[0].device
        self.state: State | None = None
        self.nll_d = torch.zeros((), dtype=torch.float64, device=self.device)
        self.scale: list[torch.Tensor] | None = None  # RMS rule: 1 / (RMS + eps) per weight
        self.pull: list[torch.Tensor] | None = None  # RMS rule: decay * RMS / mean RMS, at most 1
        if options.rule == "rms":
            if rms is None:
                raise ConfigError("--dynamic-rule rms needs gradient statistics of the training text")
            self.scale = [1.0 / (r.to(p.dtype) + RMS_EPS) for r, p in zip(rms, self.params)]
            mean = torch.cat([r.reshape(-1) for r in rms]).mean()
            self.pull = [(options.decay * r / mean).clamp_(max=1.0).to(p.dtype) for r, p in zip(rms, self.params)]

    def feed(self, ids: np.ndarray) -> None:
        self.static.feed(ids)
        super().feed(ids)

    def finish(self) -> tuple[Any, int]:
        static, _ = self.static.finish()
        _, tokens = super().finish()
        return np.array([static, float(self.nll_d)]), tokens

    def _score(self, ids: np.ndarray) -> None:
        t = torch.from_numpy(np.ascontiguousarray(ids)).to(self.device)
        x, y = t[None, :-1], t[None, 1:]  # (1, n)
        seg, vocab, opt = self.options.segment, self.dynamic.vocab_size, self.options
        with _no_cudnn(self.device):
            for i in range(0, x.size(1), seg):
                with torch.enable_grad():
                    out = self.dynamic(x[:, i : i + seg], self.state)
                    logits, state = _logits(out), out.state  # (1, s, V)
                    nll = F.cross_entropy(logits.float().reshape(-1, vocab), y[0, i : i + seg], reduction="none")
                    grads = torch.autograd.grad(nll.mean(), self.params)
                self.nll_d += nll.detach().sum(dtype=torch.float64)
                self.state = detach_state(state)
                with torch.no_grad():
                    if self.scale is None:  # SGD, then a uniform pull toward the original weights
                        torch._foreach_add_(self.params, grads, alpha=-opt.lr)
                        if opt.decay:
                            torch._foreach_lerp_(self.params, self.origin, opt.decay)
                    else:  # RMS: each weight's step divided by its RMS, pulled back in proportion to it
                        assert self.pull is not None
                        torch._foreach_addcmul_(self.params, grads, self.scale, value=-opt.lr)
                        if opt.decay:
                            back = torch._foreach_sub(self.origin, self.params)
                            torch._foreach_addcmul_(self.params, back, self.pull)
        self.tokens += y.numel()


def evaluate_file_dynamic(
    model: LanguageModel,
    tokenizer: Tokenizer,
    path: str | os.PathLike,
    options: DynamicOptions,
    *,
    errors: str = "strict",
    chunk_bytes: int = CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
    rms: list[torch.Tensor] | None = None,
    **scoring: Any,
) -> tuple[TextScore, TextScore]:
    """(static, dynamic) figures of a file, the protocol of `charlm.evaluation.scoring.evaluate_file`: the static one
    scored as `evaluate_file` scores it (`scoring`: its keywords), the dynamic one as one stream.
    `rms`: `gradient_rms` of the training text, for options.rule == "rms"."""
    chunks = iter_text_chunks(path, chunk_bytes=chunk_bytes, errors=errors)
    return _dynamic_figures(model, tokenizer, chunks, str(path), options, rms, Scoring(**scoring), progress)


def evaluate_text_dynamic(
    model: LanguageModel,
    tokenizer: Tokenizer,
    text: str,
    options: DynamicOptions,
    rms: list[torch.Tensor] | None = None,
    **scoring: Any,
) -> tuple[TextScore, TextScore]:
    """(static, dynamic) figures of a text (see `evaluate_file_dynamic`)."""
    return _dynamic_figures(model, tokenizer, [text], "the text", options, rms, Scoring(**scoring))


def _dynamic_figures(
    model: LanguageModel,
    tokenizer: Tokenizer,
    chunks: Iterable[str],
    name: str,
    options: DynamicOptions,
    rms: list[torch.Tensor] | None,
    scoring: Scoring,
    progress: Callable[[int], None] | None = None,
) -> tuple[TextScore, TextScore]:
    if next(iter(model.parameters()), None) is None:  # an n-gram model has no weights to adapt
        raise ConfigError("dynamic evaluation needs a recurrent model (it takes gradient steps); drop --dynamic")
    check_vocab(model, tokenizer)
    with eval_mode(model):  # type: ignore[arg-type]  # a LanguageModel is an nn.Module
        scorer = DynamicScorer(model, context_id(tokenizer), options, scoring, rms)
        nll, _, counts = read_text(scorer, tokenizer, chunks, name, progress)
    static, dynamic = nll.tolist()
    return counts(static), counts(dynamic)
