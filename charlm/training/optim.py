"""The optimiser, the loss scaler, one update from an objective (with clipping), and the logged loss."""

from __future__ import annotations

import torch

from charlm.runtime import DistContext
from charlm.training.config import TrainConfig


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """--optimizer over the model's trainable parameters, at --lr (the schedule sets each step's rate)."""
    o = config.optim
    assert o.lr is not None, "resolve the options first (charlm.training.autosize.resolve)"
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    # fused: one kernel over all the tensors (CPU and CUDA) instead of a dozen passes over
    # each: 12 ms instead of 66 ms a step for the 16M parameters of a 2x650 word model
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused)


def make_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """Loss scaling for fp16 autocast, whose gradients would underflow; bf16 and fp32 need none."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """How a run's precision is recorded (RunState.precision) and shown: fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]


def apply_gradients(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, objective: torch.Tensor, clip: float
) -> None:
    """One update from `objective` (a scalar with its graph): backward (scaled under fp16), clip the
    gradient norm to `clip` (0: off), step. No host sync."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(objective).backward()
        scaler.unscale_(optimizer)
    else:
        objective.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip, foreach=True)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


class LossMeter:
    """Weighted training loss since the last log (an LM: by tokens), summed on the device: no host sync per step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sum = torch.zeros((), device=self.device)
        self.tokens = 0

    def add(self, loss: torch.Tensor, tokens: int) -> None:
        self.sum += loss.detach() * tokens
        self.tokens += tokens

    def take(self, dctx: DistContext) -> float | None:
        """The mean since the last take, over all processes (one host sync), or None if nothing was added."""
        if self.tokens == 0:
            return None
        total, count = dctx.all_sum([float(self.sum), float(self.tokens)], self.device)
        self.reset()
        return total / count
