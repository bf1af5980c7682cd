"""The training loop: one session of a task, from its first step to its last save.

    Loop.run()   baselines (once a run), then  while no stop_reason():  step()  ->  log()  ->  validate_and_save()

The loop owns what every task trained by gradient steps shares: the optimiser, the
loss scaler, clipping, the schedule and limits, stop signals, the validation
cadence (every `eval_interval` steps and at the end), agreement between the
processes of a torchrun job, the guards (divergence, not learning, overfitting),
logging and the saves: `best` keeps the lowest validation loss, `last` everything a
resume needs. Nothing is lost: see `charlm.checkpoint.store.RunWriter`. What it
trains, on what, and how it is scored is the task's (`charlm.training.task`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from charlm.checkpoint import CheckpointInfo
from charlm.checkpoint import store as ckpt
from charlm.errors import DivergedError
from charlm.runtime import DistContext, autocast, retain_freed_memory
from charlm.training.guards import Guards, end_notes
from charlm.training.observer import SilentObserver, TrainObserver
from charlm.training.optim import LossMeter, apply_gradients, make_optimizer, make_scaler, precision_name
from charlm.training.resume import reconcile_best, restore_run
from charlm.training.schedule import Limits, lr_factor
from charlm.training.sharing import agree_to_stop, share_json
from charlm.training.signals import StopSignals
from charlm.training.state import RunState, TrainResult, record_validation
from charlm.training.task import OpenedTask


class Loop:
    """One training session of a task: its optimiser, counters and saves, and the steps between them."""

    def __init__(
        self,
        opened: OpenedTask,
        device: torch.device,
        dctx: DistContext,
        writer: ckpt.RunWriter | None,
        observer: TrainObserver | None,
    ) -> None:
        self.task, self.config, self.amp_dtype = opened.task, opened.config, opened.amp_dtype
        self.chosen = opened.chosen  # what charlm chose for options the user left open, and why
        self.device, self.dctx, self.writer = device, dctx, writer
        self.obs = observer or SilentObserver()
        self.model: Any = self.task.model  # the checkpoint code types it as the recurrent model's today
        self.optimizer = make_optimizer(self.config, self.model)
        self.scaler = make_scaler(self.amp_dtype, device)
        t = self.task
        self.state = RunState(
            fingerprint=t.fingerprint, valid_fingerprint=t.valid_fingerprint, precision=precision_name(self.amp_dtype)
        )
        self.resumed_from: int | None = None
        self.notes: list[str] = []  # what the start-up lines warn of
        self.guards = Guards(self.config)
        self.history: list[dict[str, Any]] = []
        self.meter = LossMeter(device)
        self.eval_cost = 0.0  # seconds the last validation and save took: reserved before the budget ends
        self.train_loss: float | None = None
        self._session_start = time.perf_counter()
        self._elapsed_before = 0.0  # seconds earlier sessions of the run trained
        self._tokens_at_start = 0
        self._synced_elapsed = 0.0
        assert self.config.optim.lr is not None, "resolve the options first"
        self.lr = self.config.optim.lr
        epochs, max_steps, budget = self.config.run.limits
        self.limits = Limits(epochs, max_steps, budget, t.columns)

    def begin(self, seconds: float) -> None:
        """A new run: the task's start and run files; `seconds` spent choosing count against the budget."""
        self.state.elapsed = seconds
        self.task.begin(self.writer, self.config.to_dict())

    def restore(self, info: CheckpointInfo) -> None:
        """Continue a run from last.safetensors (`charlm.training.resume`), and its directory from that step."""
        self.state = restore_run(info, self.task, self.optimizer, self.scaler, self.device, not self.dctx.active)
        self.state.precision = precision_name(self.amp_dtype)
        self.resumed_from = self.state.step
        self.notes += reconcile_best(self.state, ckpt.weights_metadata(info.path, "best"), self.task.valid_fingerprint)
        if self.dctx.active:
            # Ranks share the weights (DDP broadcasts rank 0's) but not dropout masks. A resumed
            # multi-process run restarts the carried state from zero: the checkpoint holds rank 0's only.
            torch.manual_seed(self.config.run.seed + 7919 * (self.dctx.rank + 1) + self.state.step)
        if self.writer is not None:
            ckpt.truncate_metrics(info.path, self.state.step)
            self.writer.continue_run(info, self.config.to_dict())

    def run(self, stop_after: Callable[[int], bool] | None = None) -> TrainResult:
        """The session; `stop_after(step)` stops it as Ctrl-C would (tests use it)."""
        self.measure_baselines()
        self.net = self.dctx.wrap(self.model, self.device)
        self._session_start, self._elapsed_before = time.perf_counter(), self.state.elapsed
        self._tokens_at_start = self.state.tokens
        self.obs.on_start(self.start_info())
        self.model.train()
        if self.device.type == "cpu":  # training's blocks; generation and perplexity keep glibc's defaults
            retain_freed_memory()
        with StopSignals() as signals:
            while not (status := self.stop_reason(signals, stop_after)):
                self.step()
                if self.state.step % self.config.run.log_interval == 0:
                    self.log()
                if self.state.step % self.config.run.eval_interval == 0 and (stop := self.validate_and_save()):
                    status = stop
                    break
            self.finish(status)
        return self.result(status, signals.received)

    def step(self) -> None:
        """One optimiser step on the task's next batch: the hot path, with no host sync."""
        batch = self.task.next_batch(self.state)
        self.set_lr(batch.lr_scale)
        with autocast(self.device, self.amp_dtype):
            loss, objective = self.task.loss(self.net, batch)
        apply_gradients(self.optimizer, self.scaler, objective, self.config.optim.clip)
        self.meter.add(loss, batch.size)
        s = self.state
        s.step, s.tokens = s.step + 1, s.tokens + batch.size
        self.task.advance(s, batch)

    def stop_reason(self, signals: StopSignals, stop_after: Callable[[int], bool] | None) -> str | None:
        """Why the run stops before the next step, or None. In a torchrun job the ranks agree at log intervals."""
        s = self.state
        reached = self.limits.reached(s)
        if reached:
            return reached
        out_of_time = self.limits.out_of_time(self.elapsed() + self.eval_cost)
        asked = bool(signals.received) or (stop_after is not None and stop_after(s.step))
        if self.dctx.active:  # no step waits on a collective for this
            if s.step % self.config.run.log_interval:
                return None
            out_of_time, asked, self._synced_elapsed = agree_to_stop(
                self.dctx, self.device, out_of_time, asked, self.elapsed()
            )
        return "time budget" if out_of_time else "interrupted" if asked else None

    def set_lr(self, scale: float) -> None:
        """The learning rate of the next step: the schedule's, times the batch's own scale."""
        seconds = self._synced_elapsed if self.dctx.active else self.elapsed()
        progress = self.limits.progress(self.state, seconds)
        lr = self.lr * scale * lr_factor(self.config, self.state.step, progress, self.state.plateau_scale)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def elapsed(self) -> float:
        """Training time of the run, earlier sessions included."""
        return self._elapsed_before + (time.perf_counter() - self._session_start)

    def finish(self, status: str) -> None:
        """The end of a session: the last log, then a final validation, or only a quick save when interrupted."""
        self.log()
        self.guards.ending = True  # the last validation: the guards may still warn, but there is nothing to stop
        if self.state.last_eval_step == self.state.step:
            return
        if status == "interrupted":
            if self.writer is not None:
                self.save(best=None, records=[])  # quick: no validation on Ctrl-C
        else:
            self.validate_and_save()

    def log(self) -> None:
        """Record the training loss since the last log (the one host sync per log interval)."""
        value = self.meter.take(self.dctx)
        if value is None:
            return
        self.check_finite(value, "training")
        self.train_loss = value
        s = self.state
        budget = self.limits.time_budget
        rec = {
            "type": "train",
            "step": s.step,
            "epoch": s.epoch,
            "loss": value,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens_per_s": (s.tokens - self._tokens_at_start) / max(time.perf_counter() - self._session_start, 1e-9),
            "elapsed": round(self.elapsed(), 3),
            "time_left": None if budget is None else max(0.0, budget - self.elapsed()),
            "progress": self.limits.progress(s, self.elapsed()),
        }
        if self.writer is not None:
            self.writer.log([rec])
        self.history.append(rec)
        self.obs.on_log(rec)

    def validate_and_save(self) -> str | None:
        """Validate and save on rank 0, then share its decisions with every rank: why to stop early, or None."""
        self.state.last_eval_step = self.state.step  # on every rank: the end of the run asks whether to validate again
        if not self.dctx.active:
            return self._validate_and_save_main()

        def on_main() -> list[Any]:
            return [self._validate_and_save_main(), self.state.plateau_scale, self.eval_cost]

        stop, self.state.plateau_scale, self.eval_cost = share_json(self.dctx, self.device, on_main)
        return str(stop) if stop else None

    def _validate_and_save_main(self) -> str | None:
        t0 = time.perf_counter()
        rec = self.validate()
        self.check_finite(rec["valid_loss"], "validation")
        # what best, --patience and the guards follow: the task's own criterion (a tagger's error rate), else the loss
        criterion = rec.get("valid_criterion", rec["valid_loss"])
        improved, patience_out = record_validation(self.state, criterion, self.config)
        rec |= {"best_valid_loss": self.state.best_valid, "improved": improved}
        progress = self.limits.progress(self.state, self.elapsed())
        warnings, overfit_stop = self.guards.check(self.state, criterion, progress)
        if warnings:
            rec["warnings"] = warnings
        s = self.state
        best = {"step": s.step, "valid_loss": criterion, "valid_fingerprint": s.valid_fingerprint}
        self.save(best=best if improved else None, records=[rec])
        self.eval_cost = time.perf_counter() - t0
        self.history.append(rec)
        self.obs.on_eval(rec)
        return "early stop" if patience_out else "overfitting" if overfit_stop else None

    def validate(self) -> dict[str, Any]:
        """The validation record: the task's figures (and sample) with the run's counters."""
        figures = self.task.validate()
        sample = self.task.sample()
        return (({"sample": sample}) if sample else {}) | {
            "type": "valid",
            "step": self.state.step,
            "epoch": self.state.epoch,
            **figures,
            "elapsed": round(self.elapsed(), 3),
        }

    def measure_baselines(self) -> None:
        """The task's baselines, measured once per run on rank 0 (a resume shows the stored ones).

        Their seconds count against the run's budget, as choosing the model does."""
        if not self.config.run.baselines or self.state.baselines is not None:
            return
        b = share_json(self.dctx, self.device, self.task.baselines)
        self.state.baselines = b
        self.state.elapsed += b["seconds"]
        if self.writer is not None:  # metrics.jsonl's one "baselines" record; `history` keeps train and valid
            self.writer.log([{"type": "baselines", "step": self.state.step, **b}])

    def save(self, best: dict[str, Any] | None, records: list[dict[str, Any]]) -> None:
        """best (when improved), the records, then last: see `RunWriter.save`."""
        assert self.writer is not None
        extra = {"rng/cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            extra["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        extra.update(self.task.carry())
        self.state.elapsed = self.elapsed()
        trainer = self.state.to_dict() | ({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})
        self.writer.save(self.model, self.optimizer, trainer, extra, best=best, records=records)

    def check_finite(self, loss_value: float, where: str) -> None:
        """The guard against divergence: a loss that is not finite, or above the task's bound, stops the run."""
        if not math.isfinite(loss_value) or loss_value > self.task.diverged_above:
            raise DivergedError(
                f"training diverged at step {self.state.step} ({where} loss {loss_value:.4g}); "
                f"the last good checkpoint in {self.config.out_dir} is kept; try a lower --lr or a --clip value"
            )

    def start_info(self) -> dict[str, Any]:
        """What the observer's start-up lines show: the run's, then the task's own."""
        task = self.task.describe()
        epochs, max_steps, budget = self.config.run.limits
        return task | {
            "out": str(self.config.out_dir),
            "resumed_from": self.resumed_from,
            "device": str(self.device),
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            "epochs": epochs,
            "max_steps": max_steps,
            "time_budget": budget,
            "already_done": self.resumed_from is not None and self.limits.reached(self.state) is not None,
            "chosen": self.chosen,
            "baselines": self.state.baselines,
            "warnings": self.notes + task.get("warnings", []),
        }

    def result(self, status: str, received: str | None) -> TrainResult:
        s, extra = self.state, self.task.summary()
        run_time = time.perf_counter() - self._session_start
        summary = TrainResult(
            out=self.config.out_dir,
            status=status,
            step=s.step,
            epoch=s.epoch,
            best_valid_loss=s.best_valid,
            last_valid_loss=s.last_valid,
            train_loss=self.train_loss,
            elapsed=self.elapsed(),
            tokens_per_s=(s.tokens - self._tokens_at_start) / max(run_time, 1e-9),
            history=self.history,
            resumed_from=self.resumed_from,
            signal=received if status == "interrupted" else None,
            best_step=s.best_step,
            baselines=s.baselines,
            notes=end_notes(s),
            vocab_size=extra.get("vocab_size"),
        )
        self.obs.on_end(asdict(summary) | {"out": str(summary.out), **extra})
        return summary
