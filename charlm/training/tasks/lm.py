"""The truncated-BPTT language model as a task of the training loop.

One step reads a window of `bptt` steps across `batch_size` parallel streams,
carrying the recurrent state from window to window and detaching it at each
edge; an epoch ends when the windows reach the rows' last column, and the next
starts from the zero state at a random offset. The loss is the model's own
(an adaptive softmax scores only what it must) plus AWD-LSTM's AR and TAR.
Validation scores the validation ids by `charlm perplexity`'s rules and draws a
short sample; last.safetensors keeps the carried state, so a resume continues
the very window it stopped at.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from charlm.checkpoint import store as ckpt
from charlm.data import batchify, epoch_offset, get_batch, num_windows, shard, window_length
from charlm.models import RNNLanguageModel, State, detach_state
from charlm.runtime import DistContext, autocast
from charlm.training import baselines
from charlm.training.config import TrainConfig
from charlm.training.optim import apply_gradients
from charlm.training.prepare import PreparedData
from charlm.training.state import RunState
from charlm.training.task import Batch
from charlm.training.validation import valid_figures, validation_sample

# Above this share of validation tokens outside the vocabulary, the start-up lines warn.
OOV_WARN_RATE = {"char": 0.01, "word": 0.05}


def activation_regularisation(dropped: torch.Tensor, raw: torch.Tensor, ar: float, tar: float) -> torch.Tensor:
    """AWD-LSTM's AR and TAR: ar * mean(dropped^2) + tar * mean((raw_t - raw_t-1)^2).

    dropped, raw: (B, T, H), the last layer's output after and before its dropout.
    AR keeps activations small; TAR keeps the raw state from jumping between steps.
    """
    penalty = torch.zeros((), device=raw.device)
    if ar:
        penalty = penalty + ar * dropped.float().pow(2).mean()
    if tar:
        penalty = penalty + tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    return penalty


def lm_objective(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, hidden: State | None, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, State]:
    """One window forward from the carried state: (loss, loss + AR/TAR, the state after it), graphs attached.

    x, y: (B, T). Runs under the caller's autocast.
    """
    # the model computes the loss (an adaptive softmax scores only what it must): (), state, (B, T, H) x 2
    out = net(x, hidden, with_activations=True, targets=y)
    assert out.loss is not None and out.activations is not None
    dropped, raw = out.activations
    objective = out.loss + activation_regularisation(dropped, raw, config.task.ar or 0.0, config.task.tar or 0.0)
    return out.loss, objective, out.state


def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    x: torch.Tensor,  # (B, T) ids
    y: torch.Tensor,  # (B, T) the ids that follow
    hidden: State | None,  # carried from the previous window
    config: TrainConfig,
    amp_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, State]:
    """One truncated-BPTT step outside the loop (speed measuring, the precision trial, benchmarks):
    forward a window from the carried state, backward, clip, update, as the loop's step does.

    x, y: (B, T). Returns the window's mean loss (detached, still on the device: no
    host sync) and the state after the window, detached (the window edge).
    """
    with autocast(x.device, amp_dtype):
        loss, objective, hidden = lm_objective(net, x, y, hidden, config)
    apply_gradients(optimizer, scaler, objective, config.optim.clip)
    return loss.detach(), detach_state(hidden)  # cut the graph at the window edge, keep the values


class LMTask:
    """Language modelling by truncated BPTT over a run's token ids (`PreparedData`); see the module doc."""

    def __init__(
        self,
        config: TrainConfig,
        data: PreparedData,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        dctx: DistContext,
    ) -> None:
        assert config.task.batch_size is not None and config.task.bptt is not None, "resolve the options first"
        self.config, self.data, self.device, self.amp_dtype = config, data, device, amp_dtype
        self.model = RNNLanguageModel(config.model_config(data.tokenizer.vocab_size)).to(device)
        self.hidden: State | None = None  # carried from window to window
        self.bptt = config.task.bptt
        part = shard(data.train_ids, dctx.rank, dctx.world)  # this rank's part: a view, no copy
        self.rows = batchify(part, config.task.batch_size)  # (B, L), still on disk
        self.columns = self.rows.shape[1] - 1
        self.fingerprint, self.valid_fingerprint = data.fingerprint, data.valid_fingerprint
        self.diverged_above = 3.0 * math.log(data.tokenizer.vocab_size) + 1.0

    def begin(self, writer: ckpt.RunWriter | None, train_config: dict[str, Any]) -> None:
        # the output layer starts at the unigram distribution: the first steps learn context (measured:
        # a 2x650 word model's validation loss after 150 steps 5.83 against 6.25 from torch's init)
        self.model.init_output_bias(torch.from_numpy(self.data.unigram_counts()))
        if writer is not None:
            writer.begin(self.model.config, self.data.tokenizer, train_config)

    def next_batch(self, state: RunState) -> Batch:
        """The next window of the training rows, widened to int64 on the device: inputs and targets (B, T)."""
        c = self.config
        length = window_length(c.run.seed, state.step, self.bptt, c.task.bptt_jitter)
        x, y = get_batch(self.rows, state.pos, length)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        # a window shorter or longer than bptt scales the rate (AWD-LSTM)
        return Batch(x, y, y.numel(), length / self.bptt if c.task.bptt_jitter else 1.0)

    def loss(self, net: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        loss, objective, hidden = lm_objective(net, batch.inputs, batch.targets, self.hidden, self.config)
        self.hidden = detach_state(hidden)  # cut the graph at the window edge, keep the values
        return loss, objective

    def advance(self, state: RunState, batch: Batch) -> None:
        """At the end of a pass over the streams the next epoch starts from the zero state, at a column
        shifted by a random offset (`data.epoch_offset`)."""
        state.pos += batch.inputs.size(1)
        if state.pos >= self.columns:
            state.epoch, self.hidden = state.epoch + 1, None
            state.pos = epoch_offset(self.config.run.seed, state.epoch, self.bptt)

    def validate(self) -> dict[str, Any]:
        # The same function and defaults as `charlm perplexity`, so its figure on the
        # validation text reproduces the loss recorded here.
        r = self.config.run
        score = self.data.score_validation(self.model, r.eval_tokens, streams=r.eval_streams, amp_dtype=self.amp_dtype)
        return valid_figures(score)

    def sample(self) -> dict[str, str] | None:
        return validation_sample(self.model, self.data.tokenizer, self.data.valid_ids, self.config, self.device)

    def baselines(self) -> dict[str, Any]:
        return baselines.compute(self.data, self.config)

    def carry(self) -> dict[str, torch.Tensor]:
        # stored in fp32 whatever autocast computed it in, so any device can resume it
        return {f"carry/{i}": h.float() for i, h in enumerate(self.hidden or ())}

    def restore(self, tensors: dict[str, torch.Tensor], keep_carry: bool) -> None:
        carry = [tensors[f"carry/{i}"] for i in range(self.model.num_state_tensors) if f"carry/{i}" in tensors]
        kept = tuple(t.to(self.device, torch.float32) for t in carry) if carry and keep_carry else None
        self.hidden = kept

    def describe(self) -> dict[str, Any]:
        data, tok, c = self.data, self.data.tokenizer, self.config
        oov_rate = data.valid_oov / max(1, len(data.valid_ids))
        warn_at = OOV_WARN_RATE.get(tok.kind)
        warnings = []
        if warn_at is not None and oov_rate > warn_at:
            warnings.append(
                f"{100 * oov_rate:.1f}% of the validation tokens are outside the vocabulary (scored as <unk>); "
                "is the validation text in the same language and script as the corpus?"
            )
        return {
            "level": tok.kind,
            "vocab_size": tok.vocab_size,
            "parameters": self.model.num_parameters(),
            "train_tokens": len(data.train_ids),
            "valid_tokens": len(data.valid_ids),
            "valid_scored": min(len(data.valid_ids), c.run.eval_tokens or len(data.valid_ids)),
            "cache": str(data.cache),
            "cache_reused": data.reused,
            "valid_oov_rate": oov_rate,
            "windows_per_epoch": num_windows(self.rows, self.bptt),
            "model": self.model.config.to_dict(),
            "warnings": warnings,
        }

    def summary(self) -> dict[str, Any]:
        return {"vocab_size": self.data.tokenizer.vocab_size, "level": self.data.tokenizer.kind}
