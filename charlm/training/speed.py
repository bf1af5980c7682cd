"""How fast and how well a recurrent model trains here, and the choice made from it (options and precision).

    measure_speed(config, ...)    training tokens per second of a shape, on random ids
    learning_losses(config, ...)  a short paired run's losses in each precision (the bf16 trial)
    choose(config, data, ...)     the options left open and the precision, chosen on rank 0 and shared

What is chosen from the measurements is `charlm.training.autosize`'s; this module measures.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from charlm.data import batchify, get_batch, num_windows
from charlm.models import RNNLanguageModel, State
from charlm.runtime import DistContext, cpu_bf16_candidate, resolve_precision
from charlm.training import autosize
from charlm.training.clusters import output_layer
from charlm.training.config import TrainConfig
from charlm.training.optim import make_optimizer
from charlm.training.prepare import PreparedData
from charlm.training.sharing import share_json
from charlm.training.tasks.lm import train_step

# measure_speed times steps until this many seconds have passed (or MEASURE_MAX_STEPS): a small model's
# step takes milliseconds, and two of them gave a speed 38x too low on one machine (issue 21).
MEASURE_SECONDS = 0.25
MEASURE_MAX_STEPS = 16
MIN_STEPS_TO_MEASURE = 300  # a run limited to fewer steps trains in fp32 under --precision auto on a CPU


def measure_speed(config: TrainConfig, vocab: int, device: torch.device, steps: int = 2) -> float:
    """Training tokens per second of `config`'s model here (in its precision): one warm-up step, then at
    least `steps` timed ones on random ids, more for a small model (MEASURE_SECONDS); the median step counts.

    The global random state is left as it was, so measuring changes no run.
    """
    assert config.task.batch_size is not None and config.task.bptt is not None
    amp_dtype = resolve_precision(config.run.precision, device, config.model.cell)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = RNNLanguageModel(config.model_config(vocab)).to(device)
        optimizer = make_optimizer(config, model)
        # ids drawn as word frequencies fall (Zipf: p ~ 1/rank; ids are frequency-ordered), so an
        # adaptive softmax meets as many tail targets as on real text; other layers cost the same for any ids
        zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
        x = torch.multinomial(zipf, config.task.batch_size * config.task.bptt, replacement=True)
        x = x.view(config.task.batch_size, config.task.bptt).to(device)
        loss, hidden = train_step(model, optimizer, None, x, x, None, config, amp_dtype)
        float(loss)  # waits for the device
        times: list[float] = []
        while len(times) < steps or (sum(times) < MEASURE_SECONDS and len(times) < MEASURE_MAX_STEPS):
            t0 = time.perf_counter()
            loss, hidden = train_step(model, optimizer, None, x, x, hidden, config, amp_dtype)
            float(loss)
            times.append(time.perf_counter() - t0)
        return x.numel() / statistics.median(times)


def learning_losses(
    config: TrainConfig, ids: np.ndarray, vocab: int, device: torch.device, steps: int, precisions: tuple[str, ...]
) -> dict[str, list[float]]:
    """Training losses of `steps` steps of `config`'s model in each precision, from the same start on the same text.

    The model is built once per precision from the same seed and trained on the
    first windows of `ids` (the run's training text) without dropout, the rate
    rising from a tenth of the peak as a run's warm-up does: any difference
    between the precisions' losses comes from the precision alone. The global
    random state is left as it was.
    """
    assert config.task.batch_size is not None and config.task.bptt is not None and config.optim.lr is not None
    peak = config.optim.lr
    trial = config.replace(dropout=0.0, dropout_input=0.0, dropout_embed=0.0, weight_drop=0.0, ar=0.0, tar=0.0)
    need = config.task.batch_size * (config.task.bptt * steps + 1)
    rows = batchify(np.asarray(ids[: min(len(ids), need)]).astype(np.int64), config.task.batch_size)
    windows = max(1, num_windows(rows, config.task.bptt))
    losses: dict[str, list[float]] = {}
    for precision in precisions:
        amp_dtype = resolve_precision(precision, device, config.model.cell)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.run.seed)
            model = RNNLanguageModel(trial.model_config(vocab)).to(device)
            optimizer = make_optimizer(trial, model)
            hidden: State | None = None
            run = []
            for step in range(steps):
                for g in optimizer.param_groups:
                    g["lr"] = peak * (0.1 + 0.9 * step / max(1, steps - 1))
                x, y = get_batch(rows, (step % windows) * config.task.bptt, config.task.bptt)
                loss, hidden = train_step(model, optimizer, None, x.to(device), y.to(device), hidden, trial, amp_dtype)
                run.append(loss)
            losses[precision] = [float(v) for v in torch.stack(run).cpu()]
    return losses


def choose(
    config: TrainConfig, data: PreparedData, device: torch.device, dctx: DistContext, kept: str | None = None
) -> tuple[TrainConfig, str, float, torch.dtype | None]:
    """The options left to charlm and the precision, chosen on rank 0 and shared.

    Returns (config, why, seconds spent measuring, autocast dtype). `kept`: on a
    resume, the precision the run trained in; under `--precision auto` the run
    keeps bf16 where this machine can run it (no new measurement, so a resume on
    the same machine continues exactly), and trains in fp32 where it cannot.
    """
    _, max_steps, _ = config.run.limits
    bf16 = (
        config.run.precision == "auto"
        and device.type == "cpu"
        and (max_steps is None or max_steps >= MIN_STEPS_TO_MEASURE)  # measuring costs ~6 steps: a short run
        and cpu_bf16_candidate(config.model.cell)  # would not earn them back, and starts at once in fp32
    )
    if kept is not None:
        name = "bf16" if bf16 and kept == "bf16" else config.run.precision
        return config, "", 0.0, resolve_precision(name, device, config.model.cell)
    config = config.with_level_defaults()
    layer_open = config.model.adaptive_softmax is not False and config.model.adaptive_cutoffs is None
    if config.resolved and not bf16 and not layer_open:
        return config, "", 0.0, resolve_precision(config.run.precision, device, config.model.cell)

    def on_main() -> dict[str, object]:
        vocab = data.tokenizer.vocab_size
        c, layer_why = config, ""
        if layer_open:  # the output layer's clusters follow the ids' frequencies (V,)
            c, layer_why = output_layer(config, data.unigram_counts())
        choice = autosize.resolve(
            c,
            len(data.train_ids) // dctx.world,
            device.type,
            lambda c: measure_speed(c, vocab, device),
            bf16,
            valid_tokens=len(data.valid_ids),
            learns=lambda c: learning_losses(
                c, data.train_ids, vocab, device, autosize.BF16_CHECK_STEPS, ("fp32", "bf16")
            ),
        )
        why = "; ".join(w for w in (choice.reason, layer_why) if w)
        return {"config": choice.config.to_dict(), "why": why, "seconds": choice.seconds,
                "precision": choice.precision or config.run.precision}  # fmt: skip

    chosen = share_json(dctx, device, on_main)
    config = TrainConfig.from_dict(chosen["config"])
    return config, chosen["why"], chosen["seconds"], resolve_precision(chosen["precision"], device, config.model.cell)
