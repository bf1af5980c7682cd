"""The loop runs any task: a toy that fits a line (no text, no tokens, no recurrent state) gets the same
limits, validation cadence, best and last saves and exact resume as the language model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from charlm.checkpoint import CheckpointInfo
from charlm.checkpoint import store as ckpt
from charlm.runtime import DistContext
from charlm.training import Batch, OpenedTask, TrainConfig
from charlm.training.loop import Loop


class Line(torch.nn.Module):
    """y = w x + b. `config` is what the checkpoint code asks of a model (whether weights are tied)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, 1)
        self.config = SimpleNamespace(kind="line", tie_weights=False, to_dict=lambda: {"kind": "line"})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class NoTokenizer:
    """The run files' tokenizer slot, empty: this task reads no text."""

    kind, vocab_size = "none", 1

    def save(self, directory: Path) -> None:
        pass

    def to_dict(self) -> dict:
        return {}


class LineTask:
    """Fit y = 3x - 1 on 64 fixed points, 8 a batch (an epoch: 8 steps); validate on 16 other points."""

    columns, diverged_above, fingerprint, valid_fingerprint = 64, 1e6, "line-train", "line-valid"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = Line()
        self.x = torch.linspace(-1, 1, 64).unsqueeze(1)  # (64, 1)
        self.vx = torch.linspace(-0.9, 0.9, 16).unsqueeze(1)  # (16, 1)

    def begin(self, writer, train_config):
        if writer is not None:
            writer.begin(self.model.config, NoTokenizer(), train_config)

    def next_batch(self, state):
        x = self.x[state.pos : state.pos + 8]
        return Batch(x, 3 * x - 1, 8)

    def loss(self, net, batch):
        loss = F.mse_loss(net(batch.inputs), batch.targets)
        return loss, loss

    def advance(self, state, batch):
        state.pos += 8
        if state.pos >= self.columns:
            state.epoch, state.pos = state.epoch + 1, 0

    def validate(self):
        with torch.no_grad():
            return {"valid_loss": F.mse_loss(self.model(self.vx), 3 * self.vx - 1).item()}

    def sample(self):
        return None

    def baselines(self):
        return {"mean": F.mse_loss(torch.full_like(self.vx, -1.0), 3 * self.vx - 1).item(), "seconds": 0.0}

    def carry(self):
        return {}

    def restore(self, tensors, keep_carry):
        pass

    def describe(self):
        return {"warnings": []}

    def summary(self):
        return {}


def config(out: Path, **kw) -> TrainConfig:
    base = dict(corpus=("-",), out=str(out), lr=0.1, max_steps=40, eval_interval=10, log_interval=5,
                warmup_steps=0, schedule="constant", device="cpu")  # fmt: skip
    return TrainConfig.from_options(**(base | kw))


def run(c: TrainConfig, resume: bool = False, stop_after=None):
    out = c.out_dir
    with ckpt.RunWriter(out) as writer:
        loop = Loop(OpenedTask(LineTask(), c, None), torch.device("cpu"), DistContext(), writer, None)
        if resume:
            meta = json.loads((out / "checkpoint.json").read_text())
            loop.restore(CheckpointInfo(out, None, meta["train"], meta))  # type: ignore[arg-type]
        else:
            loop.begin(0.0)
        return loop.run(stop_after)


def records(out: Path, kind: str) -> list[dict]:
    return [r for r in ckpt.read_metrics(out) if r["type"] == kind]


def test_a_toy_task_learns_validates_on_cadence_and_keeps_best_and_last(tmp_path):
    out = tmp_path / "line"
    r = run(config(out))
    assert r.status == "max steps" and (r.step, r.epoch) == (40, 5)
    valid = records(out, "valid")
    assert [v["step"] for v in valid] == [10, 20, 30, 40] and [t["step"] for t in records(out, "train")][:2] == [5, 10]
    assert valid[-1]["valid_loss"] < 0.1 * records(out, "baselines")[0]["mean"]  # it learned the line
    assert r.best_valid_loss == min(v["valid_loss"] for v in valid)
    assert ckpt.weights_metadata(out, "best")["step"] == r.best_step
    assert ckpt.load_training_state(out)[1]["trainer"]["step"] == 40


def test_a_toy_run_stopped_and_resumed_equals_one_that_never_stopped(tmp_path):
    whole = run(config(tmp_path / "whole"))
    stopped = run(config(tmp_path / "parts"), stop_after=lambda step: step == 15)
    assert stopped.status == "interrupted" and stopped.step == 15
    resumed = run(config(tmp_path / "parts"), resume=True)
    assert resumed.resumed_from == 15 and resumed.step == 40
    assert [v["valid_loss"] for v in records(tmp_path / "parts", "valid")] == [
        v["valid_loss"] for v in records(tmp_path / "whole", "valid")
    ]
    assert resumed.last_valid_loss == whole.last_valid_loss


def test_a_toy_run_stops_on_its_time_budget(tmp_path):
    r = run(config(tmp_path / "line", max_steps=None, time_budget=0.3, eval_interval=1_000_000))
    assert r.status == "time budget" and r.step > 0 and r.elapsed == pytest.approx(0.3, abs=0.3)
    assert records(tmp_path / "line", "valid")[-1]["step"] == r.step  # the end validates and saves
