"""Dynamic evaluation (Krause et al., 2018): the model adapts to the text it reads.

The text is one stream (the protocol of `charlm.evaluate`: read after a line end,
every token scored, OOV counted) cut into segments of `segment` tokens. Each
segment is first scored, then the model takes one gradient step on it before the
next segment is scored; the recurrent state is carried across segments. A copy
of the model is adapted: the loaded model (and the checkpoint on disk) never
changes, and the same pass scores the same segments with the unchanged model,
so the static and the dynamic figures come side by side from one read.

Decisions:
- Update rule: SGD on the segment's mean NLL, then a decay toward the original
  weights, theta <- theta - lr * grad; theta <- theta + decay * (theta_0 - theta).
  Krause et al.'s RMS-normalised rule needs gradient statistics of the training
  data, which a checkpoint does not hold; their plain-SGD variant gets most of
  the gain. The mean (not the sum) makes `lr` independent of `segment`.
- Eval mode: no dropout for the gradient, as the scores are taken without it
  (cuDNN's RNN has no backward in eval mode, so on CUDA the dynamic copy runs
  with cuDNN disabled).
- The defaults (`DEFAULT_LR`, `DEFAULT_SEGMENT`) were measured on a char and a
  word model: benchmarks/results_dynamic.md.
- lr = 0 takes the same steps with a zero update, and gives the static figure
  exactly: the static scores are computed by the same autograd-enabled kernels
  (grad-free kernels differ in the last bits), so the static column can differ
  from `charlm perplexity --exact` by ~1e-8 relative.
The hot path is one forward/backward per segment on tensors, with the NLL summed
on the device: no Python loop per token and no host sync per segment.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.corpus import iter_text_chunks
from charlm.devices import eval_mode
from charlm.errors import ConfigError
from charlm.evaluate import (
    CHUNK_BYTES,
    EXACT_BLOCK,
    BlockScorer,
    LanguageModel,
    TextScore,
    check_vocab,
    context_id,
    read_text,
)
from charlm.model import RNNLanguageModel, State, detach_state
from charlm.tokenizers import Tokenizer

DEFAULT_LR = 0.1
DEFAULT_SEGMENT = 20
DEFAULT_DECAY = 0.0


@dataclass(frozen=True)
class DynamicOptions:
    """Segment length (tokens), SGD step size and decay toward the original weights per segment."""

    lr: float = DEFAULT_LR
    segment: int = DEFAULT_SEGMENT
    decay: float = DEFAULT_DECAY

    def __post_init__(self) -> None:
        if not self.lr >= 0:
            raise ConfigError(f"--dynamic-lr must be >= 0, got {self.lr}")
        if self.segment < 1:
            raise ConfigError(f"--dynamic-segment must be at least 1, got {self.segment}")
        if not 0 <= self.decay <= 1:
            raise ConfigError(f"the decay toward the original weights must be in [0, 1], got {self.decay}")


class DynamicScorer(BlockScorer):
    """nll: (2,) float64 on the device, the static and the dynamic summed NLL (see the module doc)."""

    def __init__(self, model: RNNLanguageModel, context: int, options: DynamicOptions) -> None:
        super().__init__(context, options.segment * max(1, EXACT_BLOCK // options.segment))  # whole segments
        self.static = model
        self.dynamic = copy.deepcopy(model)
        self.dynamic.eval()  # the static model is in eval mode: its caller's `eval_mode`
        self.params: list[torch.Tensor] = list(self.dynamic.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.origin = [p.detach() for p in self.static.parameters()]  # the same order: a deep copy's
        self.options = options
        self.device = self.origin[0].device
        self.state_s: State | None = None
        self.state_d: State | None = None
        self.nll = torch.zeros(2, dtype=torch.float64, device=self.device)
        self._no_cudnn = self.device.type == "cuda"

    def _score(self, ids: np.ndarray) -> None:
        t = torch.from_numpy(np.ascontiguousarray(ids)).to(self.device)
        x, y = t[None, :-1], t[None, 1:]  # (1, n)
        seg, vocab = self.options.segment, self.static.config.vocab_size
        for i in range(0, x.size(1), seg):
            xs, ys = x[:, i : i + seg], y[:, i : i + seg].reshape(-1)  # (1, s), (s,)
            cudnn = torch.backends.cudnn.flags(enabled=False) if self._no_cudnn else contextlib.nullcontext()
            with torch.enable_grad(), cudnn:  # both through the same (autograd) kernels: see the module doc
                logits, state_s = self.static(xs, self.state_s)  # (1, s, V)
                nll_s = F.cross_entropy(logits.detach().float().reshape(-1, vocab), ys, reduction="none")
                self.state_s = detach_state(state_s)
            self.nll[0] += nll_s.sum(dtype=torch.float64)
            with torch.enable_grad(), cudnn:
                logits, state = self.dynamic(xs, self.state_d)
                nll = F.cross_entropy(logits.float().reshape(-1, vocab), ys, reduction="none")  # (s,)
                grads = torch.autograd.grad(nll.mean(), self.params)
            self.nll[1] += nll.detach().sum(dtype=torch.float64)
            self.state_d = detach_state(state)
            with torch.no_grad():
                torch._foreach_add_(self.params, grads, alpha=-self.options.lr)
                if self.options.decay:
                    torch._foreach_lerp_(self.params, self.origin, self.options.decay)
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
) -> tuple[TextScore, TextScore]:
    """(static, dynamic) figures of a file: one exact stream, the protocol of `charlm.evaluate.evaluate_file`."""
    if not isinstance(model, RNNLanguageModel):
        raise ConfigError("dynamic evaluation needs a recurrent model (it takes gradient steps); drop --dynamic")
    check_vocab(model, tokenizer)
    with eval_mode(model):
        scorer = DynamicScorer(model, context_id(tokenizer), options)
        chunks = iter_text_chunks(path, chunk_bytes=chunk_bytes, errors=errors)
        nll, _, counts = read_text(scorer, tokenizer, chunks, str(path), progress)
    static, dynamic = nll.tolist()
    return counts(static), counts(dynamic)


def evaluate_text_dynamic(
    model: RNNLanguageModel, tokenizer: Tokenizer, text: str, options: DynamicOptions
) -> tuple[TextScore, TextScore]:
    """(static, dynamic) figures of a text (see `evaluate_file_dynamic`)."""
    check_vocab(model, tokenizer)
    with eval_mode(model):
        scorer = DynamicScorer(model, context_id(tokenizer), options)
        nll, _, counts = read_text(scorer, tokenizer, [text], "the text")
    static, dynamic = nll.tolist()
    return counts(static), counts(dynamic)
