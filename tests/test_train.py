"""The truncated-BPTT trainer: learning, repeatability, resume, divergence, stop requests."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from charlm.checkpoint import store as ckpt
from charlm.data.batching import batchify, epoch_offset, get_batch, num_windows
from charlm.errors import CheckpointError, ConfigError, CorpusError, DivergedError
from charlm.evaluation.scoring import TextScore
from charlm.models.rnn import RNNLanguageModel
from charlm.training import TrainConfig, loop, prepare, prepare_data, train
from charlm.training.optim import LossMeter, make_optimizer
from charlm.training.schedule import Limits, lr_factor
from charlm.training.state import RunState, record_validation
from charlm.training.tasks.lm import activation_regularisation, train_step


def config(corpus: Path, out: Path, **kw) -> TrainConfig:
    """A tiny run: 1x16 LSTM, 4 streams of 16 steps, frequent logging and validation."""
    base = dict(
        corpus=(str(corpus),),
        out=str(out),
        hidden_size=16,
        emb_size=8,
        num_layers=1,
        batch_size=4,
        bptt=16,
        max_steps=8,
        eval_interval=4,
        log_interval=2,
        eval_streams=4,
        warmup_steps=2,
        device="cpu",
        seed=3,
    )
    return TrainConfig.from_options(**(base | kw))


def losses(history: list[dict]) -> list[tuple]:
    """(type, step, loss) of every train and valid record, the figures a repeatable run must reproduce."""
    kept = (r for r in history if r["type"] in ("train", "valid"))
    return [(r["type"], r["step"], r["loss"] if r["type"] == "train" else r["valid_loss"]) for r in kept]


def last_weights(out: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_training_state(out)
    return {k: v for k, v in tensors.items() if k.startswith("model/")}


def assert_same_losses(a: list[tuple], b: list[tuple]) -> None:
    assert [(t, s) for t, s, _ in a] == [(t, s) for t, s, _ in b]
    for (_, _, x), (_, _, y) in zip(a, b):
        assert x == pytest.approx(y, rel=1e-6, abs=1e-7)


# ---------------------------------------------------------------- config
def test_train_config_refuses_out_of_range_values(tiny_corpus):
    for bad in (
        dict(lr=0),
        dict(batch_size=0),
        dict(valid_fraction=1.0),
        dict(dropout=1.5),
        dict(max_steps=0),
        dict(clip=-1),
    ):
        with pytest.raises(ConfigError):
            TrainConfig.from_options(corpus=(str(tiny_corpus),), **bad)
    with pytest.raises(ConfigError, match="no corpus"):
        TrainConfig.from_options(corpus=())


def test_train_config_round_trips_through_json_dict(tiny_corpus, out_dir):
    c = config(tiny_corpus, out_dir, valid=("v.txt",), dropout=0.2)
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_lr_schedule_warms_up_then_decays():
    c = TrainConfig.from_options(corpus=("x",), warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(c, 0, 0.0, 1.0) == pytest.approx(0.25)
    assert lr_factor(c, 3, 0.0, 1.0) == pytest.approx(1.0)
    assert lr_factor(c, 100, 0.5, 1.0) == pytest.approx(0.55)
    assert lr_factor(c, 100, 1.0, 1.0) == pytest.approx(0.1)
    const = TrainConfig.from_options(corpus=("x",), warmup_steps=0, schedule="constant")
    assert lr_factor(const, 7, 0.9, 1.0) == 1.0


# ---------------------------------------------------------------- a run
def test_a_run_writes_a_complete_checkpoint(tiny_corpus, out_dir):
    result = train(config(tiny_corpus, out_dir))
    assert result.status == "max steps" and result.step == 8
    for name in ("checkpoint.json", "tokenizer.json", "best.safetensors", "last.safetensors", "metrics.jsonl"):
        assert (out_dir / name).is_file(), name
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]
    assert [r["step"] for r in result.history if r["type"] == "valid"] == [4, 8]
    assert [r["step"] for r in result.history if r["type"] == "train"] == [2, 4, 6, 8]
    metrics = ckpt.read_metrics(
        out_dir
    )  # the history, after the one record of the baselines (charlm.training.baselines)
    assert [r["type"] for r in metrics[:1]] == ["baselines"] and metrics[1:] == result.history
    assert result.best_valid_loss == min(r["valid_loss"] for r in result.history if r["type"] == "valid")
    model, tok, info = ckpt.load_for_inference(out_dir)
    assert info.model_config.hidden_size == 16 and tok.vocab_size == model.config.vocab_size


def test_loss_at_the_first_step_is_the_unigram_cross_entropy(tiny_corpus, out_dir):
    """A fresh run's output layer starts at the training text's unigram distribution
    (`init_output_bias`): the first step's loss is the text's unigram cross-entropy,
    well below ln V (where a uniform start would be)."""
    result = train(config(tiny_corpus, out_dir, max_steps=1, log_interval=1, eval_interval=1))
    info = ckpt.open_checkpoint(out_dir)
    vocab = info.model_config.vocab_size
    ids = np.asarray(ckpt.open_tokenizer(info).encode_array(tiny_corpus.read_text(encoding="utf-8")))
    seen = np.bincount(ids, minlength=vocab)
    unigram = -(seen / seen.sum() * np.log((seen + 1) / (seen + 1).sum())).sum()
    first = result.history[0]
    assert first["type"] == "train" and first["step"] == 1
    assert unigram < math.log(vocab) - 0.3
    assert abs(first["loss"] - unigram) < 0.2


def test_a_tiny_model_overfits_a_short_text(tmp_path):
    text = (
        "It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
        "incredulity, it was the season of Light.\n"
    )
    assert 190 <= len(text) <= 220
    corpus = tmp_path / "short.txt"
    corpus.write_text(text * 12, encoding="utf-8")
    c = config(
        corpus,
        tmp_path / "run",
        hidden_size=48,
        emb_size=16,
        batch_size=4,
        bptt=32,
        lr=1e-2,
        schedule="constant",
        warmup_steps=0,
        max_steps=150,
        log_interval=10,
        eval_interval=50,
    )
    result = train(c)
    vocab = ckpt.open_checkpoint(tmp_path / "run").model_config.vocab_size
    # it starts at the text's unigram distribution (about 2.5 nats a character) and learns the sequence
    assert result.history[0]["loss"] > 2.0
    assert result.train_loss < 0.3 < math.log(vocab)


def test_same_seed_same_losses(tiny_corpus, tmp_path):
    kw = dict(dropout=0.2, max_steps=8)
    a = train(config(tiny_corpus, tmp_path / "a", **kw))
    b = train(config(tiny_corpus, tmp_path / "b", **kw))
    assert losses(a.history) == losses(b.history)  # exact on CPU
    c = train(config(tiny_corpus, tmp_path / "c", seed=4, **kw))
    assert losses(c.history) != losses(a.history)


# ---------------------------------------------------------------- resume
def test_resume_equals_an_uninterrupted_run(tiny_corpus, tmp_path):
    """2N steps in one go == N steps, stop (as Ctrl-C), resume to 2N; the carried state,
    dropout RNG, optimiser and schedule all continue, across an epoch boundary."""
    kw = dict(dropout=0.2, bptt=32, max_steps=12, log_interval=3, eval_interval=3)
    a = train(config(tiny_corpus, tmp_path / "a", **kw))
    b_dir = tmp_path / "b"
    b1 = train(config(tiny_corpus, b_dir, **kw), stop_after=lambda step: step == 6)
    assert b1.status == "interrupted" and b1.step == 6
    b2 = train(config(tiny_corpus, b_dir, **kw), resume=True)
    assert b2.status == "max steps" and b2.step == 12 and b2.epoch >= 1  # crossed an epoch
    assert any(r["type"] == "valid" for r in b1.history) and any(r["type"] == "valid" for r in b2.history)
    assert_same_losses(losses(b1.history) + losses(b2.history), losses(a.history))
    assert_same_losses(losses(ckpt.read_metrics(b_dir)), losses(a.history))
    assert b2.best_valid_loss == pytest.approx(a.best_valid_loss, rel=1e-6)
    for k, v in last_weights(tmp_path / "a").items():
        torch.testing.assert_close(last_weights(b_dir)[k], v)


def test_resume_with_a_longer_limit_equals_one_long_run(tiny_corpus, tmp_path):
    kw = dict(schedule="constant", log_interval=2, eval_interval=3)
    a = train(config(tiny_corpus, tmp_path / "a", max_steps=12, **kw))
    b1 = train(config(tiny_corpus, tmp_path / "b", max_steps=6, **kw))
    assert b1.status == "max steps" and b1.step == 6
    b2 = train(config(tiny_corpus, tmp_path / "b", max_steps=12, **kw), resume=True)
    assert b2.status == "max steps" and b2.step == 12
    assert_same_losses(losses(b1.history) + losses(b2.history), losses(a.history))
    for k, v in last_weights(tmp_path / "a").items():
        torch.testing.assert_close(last_weights(tmp_path / "b")[k], v)


def test_a_stop_request_saves_a_resumable_last(tiny_corpus, tmp_path):
    """Stopped between validations (as Ctrl-C would), the run saves last at that step."""
    kw = dict(max_steps=8, eval_interval=4, log_interval=1)
    stopped = tmp_path / "stopped"
    r = train(config(tiny_corpus, stopped, **kw), stop_after=lambda step: step == 3)
    assert r.status == "interrupted" and r.step == 3
    _, data = ckpt.load_training_state(stopped)
    assert data["trainer"]["step"] == 3
    assert not (stopped / "best.safetensors").exists()  # no validation ran: nothing to call best
    resumed = train(config(tiny_corpus, stopped, **kw), resume=True)
    assert resumed.step == 8
    full = train(config(tiny_corpus, tmp_path / "full", **kw))
    assert_same_losses(losses(r.history) + losses(resumed.history), losses(full.history))
    for k, v in last_weights(tmp_path / "full").items():
        torch.testing.assert_close(last_weights(stopped)[k], v)


# ---------------------------------------------------------------- the output directory
def test_a_directory_holding_a_run_is_refused_unless_asked(tiny_corpus, out_dir):
    train(config(tiny_corpus, out_dir, max_steps=2, eval_interval=2))
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(config(tiny_corpus, out_dir, max_steps=2, eval_interval=2))
    r = train(config(tiny_corpus, out_dir, max_steps=3, eval_interval=3, hidden_size=8), overwrite=True)
    assert r.step == 3
    assert ckpt.open_checkpoint(out_dir).model_config.hidden_size == 8
    assert [x["step"] for x in ckpt.read_metrics(out_dir)][-1] == 3
    assert all(x["step"] <= 3 for x in ckpt.read_metrics(out_dir))


def test_resume_needs_a_run_and_excludes_overwrite(tiny_corpus, out_dir):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(config(tiny_corpus, out_dir), resume=True)
    out_dir.mkdir()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(config(tiny_corpus, out_dir), resume=True)
    with pytest.raises(ConfigError, match="--resume and --overwrite"):
        train(config(tiny_corpus, out_dir), resume=True, overwrite=True)


def test_resume_refuses_a_different_corpus(tiny_corpus, tmp_path, tiny_text):
    out = tmp_path / "run"
    train(config(tiny_corpus, out, max_steps=2, eval_interval=2))
    other = tmp_path / "other.txt"
    other.write_text(tiny_text.upper(), encoding="utf-8")
    with pytest.raises(CheckpointError):
        train(config(other, out, max_steps=4), resume=True)


def test_a_corpus_shorter_than_one_window_is_refused(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("hello world\n" * 4, encoding="utf-8")
    with pytest.raises(ConfigError, match="fewer than one window"):
        train(config(short, tmp_path / "run"))


# ---------------------------------------------------------------- divergence
def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_exploding_loss_stops_the_run_and_keeps_best(tiny_corpus, out_dir, monkeypatch):
    kw = dict(max_steps=4, eval_interval=2, log_interval=1)
    train(config(tiny_corpus, out_dir, **kw))
    best, last = _bytes(out_dir / "best.safetensors"), _bytes(out_dir / "last.safetensors")
    # Continue with an absurd learning rate: the loss explodes within a few steps.
    monkeypatch.setattr(loop, "lr_factor", lambda *a: 1e6)
    with pytest.raises(DivergedError, match="diverged") as exc:
        train(config(tiny_corpus, out_dir, **(kw | dict(max_steps=20))), resume=True)
    assert "\n" not in str(exc.value)
    assert _bytes(out_dir / "best.safetensors") == best
    assert _bytes(out_dir / "last.safetensors") == last
    ckpt.load_for_inference(out_dir)  # still loadable


def test_sgd_with_a_huge_lr_and_no_clipping_diverges(tiny_corpus, out_dir):
    c = config(
        tiny_corpus,
        out_dir,
        optimizer="sgd",
        lr=1e6,
        clip=0.0,
        warmup_steps=0,
        max_steps=20,
        eval_interval=10,
        log_interval=1,
    )
    with pytest.raises(DivergedError):
        train(c)
    assert not (out_dir / "best.safetensors").exists()  # a diverged model never becomes best


def test_nan_loss_stops_the_run_and_keeps_best(tiny_corpus, out_dir, monkeypatch):
    kw = dict(max_steps=4, eval_interval=2, log_interval=1)
    train(config(tiny_corpus, out_dir, **kw))
    best = _bytes(out_dir / "best.safetensors")
    real = RNNLanguageModel._stack  # the recurrent layers, which training and validation both run

    def poisoned(self, ids, state=None, **kw):
        x, st = real(self, ids, state, **kw)
        return x * float("nan"), st

    monkeypatch.setattr(RNNLanguageModel, "_stack", poisoned)
    with pytest.raises(DivergedError, match="nan"):
        train(config(tiny_corpus, out_dir, **(kw | dict(max_steps=8))), resume=True)
    assert _bytes(out_dir / "best.safetensors") == best


def test_observer_sees_start_logs_evals_and_end(tiny_corpus, out_dir):
    seen: dict[str, list] = {"start": [], "log": [], "eval": [], "end": []}

    class Recorder:
        def on_start(self, info):
            seen["start"].append(info)

        def on_log(self, rec):
            seen["log"].append(rec)

        def on_eval(self, rec):
            seen["eval"].append(rec)

        def on_end(self, summary):
            seen["end"].append(summary)

    train(config(tiny_corpus, out_dir), observer=Recorder())
    assert len(seen["start"]) == 1 and len(seen["end"]) == 1
    assert [r["step"] for r in seen["log"]] == [2, 4, 6, 8]
    assert [r["step"] for r in seen["eval"]] == [4, 8]
    assert seen["end"][0]["status"] == "max steps"
    v = seen["eval"][-1]
    assert v["valid_ppl"] == pytest.approx(math.exp(v["valid_loss"]))


def test_ctrl_c_saves_a_resumable_last_and_restores_the_handler(tiny_corpus, out_dir):
    """A real SIGINT mid-run: the trainer stops at the next step, saves last, and gives SIGINT back."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    before = signal.getsignal(signal.SIGINT)

    class CtrlC:
        on_start = on_eval = on_end = staticmethod(lambda *_: None)

        def on_log(self, rec):
            if rec["step"] == 3:
                os.kill(os.getpid(), signal.SIGINT)

    try:
        r = train(config(tiny_corpus, out_dir, max_steps=8, log_interval=1, eval_interval=4), observer=CtrlC())
    except KeyboardInterrupt:  # pragma: no cover - the failure this test is about
        pytest.fail("the first Ctrl-C escaped the trainer instead of stopping it")
    assert r.status == "interrupted" and r.step == 3
    assert signal.getsignal(signal.SIGINT) is before
    _, data = ckpt.load_training_state(out_dir)
    assert data["trainer"]["step"] == 3
    assert train(config(tiny_corpus, out_dir, max_steps=8, log_interval=1, eval_interval=4), resume=True).step == 8


def _scripted_validation(monkeypatch, losses_in_order: list[float]) -> None:
    """Make validation return these losses, in order (the trainer's reaction is what is tested).
    The start's baselines, scored by the same function, are left out so they take none of them."""
    it = iter(losses_in_order)
    monkeypatch.setattr(loop.Loop, "measure_baselines", lambda self: None)
    monkeypatch.setattr(
        prepare,
        "evaluate_ids",
        lambda *a, **k: TextScore(tokens=100, nll=next(it) * 100, chars=100, bytes=100, oov=0),
    )


def test_early_stopping_and_best_keeps_the_lowest_validation(tiny_corpus, out_dir, monkeypatch):
    _scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    r = train(config(tiny_corpus, out_dir, max_steps=100, eval_interval=2, patience=2))
    assert r.status == "early stop" and r.step == 8
    assert r.best_valid_loss == pytest.approx(2.0) and r.last_valid_loss == pytest.approx(2.6)
    with safe_open(str(out_dir / "best.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["charlm"])
    assert meta["step"] == 4 and meta["valid_loss"] == pytest.approx(2.0)
    assert [v["improved"] for v in r.history if v["type"] == "valid"] == [True, True, False, False]


def test_plateau_schedule_anneals_when_validation_stalls(tiny_corpus, out_dir, monkeypatch):
    _scripted_validation(monkeypatch, [3.0, 3.5, 3.6, 3.7, 3.8])
    r = train(
        config(
            tiny_corpus,
            out_dir,
            schedule="plateau",
            plateau_patience=0,
            plateau_factor=0.5,
            warmup_steps=0,
            lr=0.01,
            max_steps=8,
            eval_interval=2,
            log_interval=2,
        )
    )
    lrs = {rec["step"]: rec["lr"] for rec in r.history if rec["type"] == "train"}
    assert lrs == pytest.approx({2: 0.01, 4: 0.01, 6: 0.005, 8: 0.0025})


def test_a_refused_device_leaves_no_half_run(tiny_corpus, out_dir):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(ConfigError, match="CUDA"):
        train(config(tiny_corpus, out_dir, device="cuda"))
    assert not ckpt.is_checkpoint_dir(out_dir)
    assert train(config(tiny_corpus, out_dir, max_steps=2, eval_interval=2)).step == 2


@pytest.mark.parametrize("epochs", [1.0, 0.5, 1.5])
def test_epochs_limit_stops_after_whole_or_partial_passes(tiny_corpus, out_dir, epochs):
    c = config(tiny_corpus, out_dir, max_steps=None, epochs=epochs, bptt=64, eval_interval=100)
    columns = batchify(prepare_data(c).train_ids, c.task.batch_size).shape[1] - 1
    whole, part = divmod(epochs, 1.0)
    expected = int(whole) * math.ceil(columns / c.task.bptt)  # every pass reads each column once ...
    if part:  # ... and a partial one starts at its epoch's random offset
        expected += math.ceil((part * columns - epoch_offset(c.run.seed, int(whole), c.task.bptt)) / c.task.bptt)
    r = train(c)
    assert r.status == "epochs"
    assert r.step == expected
    assert r.epoch == int(epochs) and r.history[-1]["type"] == "valid"


def test_the_logged_loss_is_token_weighted(tiny_corpus, tmp_path):
    """One log over 4 full windows and a short last one == the token-weighted mean of per-step losses."""
    kw = dict(bptt=64, max_steps=5, eval_interval=5)
    c = config(tiny_corpus, tmp_path / "a", log_interval=1, **kw)
    src = batchify(prepare_data(c).train_ids, c.task.batch_size)
    assert num_windows(src, 64) == 5
    sizes = [get_batch(src, w * 64, 64)[1].numel() for w in range(5)]
    assert sizes[-1] < sizes[0]  # the last window is partial
    per_step = [r["loss"] for r in train(c).history if r["type"] == "train"]
    grouped = train(config(tiny_corpus, tmp_path / "b", log_interval=5, **kw)).history[0]
    expected = sum(loss * n for loss, n in zip(per_step, sizes)) / sum(sizes)
    assert grouped["loss"] == pytest.approx(expected, rel=1e-6)
    assert grouped["loss"] != pytest.approx(sum(per_step) / 5, rel=1e-6)  # not a mean of means


# ---------------------------------------------------------------- regressions found in review
def test_overwrite_with_a_bad_corpus_keeps_the_previous_run(tiny_corpus, out_dir, tmp_path):
    train(config(tiny_corpus, out_dir))
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    short = tmp_path / "short.txt"
    short.write_text("too short\n")
    with pytest.raises(ConfigError):
        train(config(short, out_dir), overwrite=True)
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_a_refused_start_leaves_no_directory_behind(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(CorpusError):
        train(config(tmp_path / "missing.txt", out))
    assert not out.exists()


def test_resuming_a_finished_run_adds_no_second_validation(tiny_corpus, out_dir):
    train(config(tiny_corpus, out_dir, max_steps=8))
    n_before = len(ckpt.read_metrics(out_dir))
    r = train(config(tiny_corpus, out_dir, max_steps=8), resume=True)
    assert r.step == 8 and r.status == "max steps"
    assert len(ckpt.read_metrics(out_dir)) == n_before


def test_last_without_rng_state_is_refused_as_corrupt(tiny_corpus, out_dir):
    train(config(tiny_corpus, out_dir))
    tensors, data = ckpt.load_training_state(out_dir)
    del tensors["rng/cpu"]
    from safetensors.torch import save_file

    save_file(tensors, str(out_dir / ckpt.LAST), metadata={"charlm": json.dumps(data)})
    with pytest.raises(CheckpointError, match="corrupt"):
        train(config(tiny_corpus, out_dir, max_steps=12), resume=True)


def test_validation_loss_is_the_perplexity_figure_of_the_validation_text(tiny_corpus, out_dir, held_out_text):
    from charlm.evaluation.scoring import evaluate_text

    r = train(config(tiny_corpus, out_dir, eval_streams=1))
    model, tok, _ = ckpt.load_for_inference(out_dir, which="last")
    valid_text = held_out_text(tiny_corpus)
    assert evaluate_text(model, tok, valid_text, exact=True).loss == pytest.approx(r.last_valid_loss, rel=1e-6)


# ---------------------------------------------------------------- the trainer's parts, one at a time
def test_run_state_round_trips_and_ignores_keys_it_does_not_know():
    s = RunState(step=7, epoch=1, pos=300, best_valid=1.5, plateau_scale=0.5, fingerprint="ab")
    assert RunState.from_dict(s.to_dict() | {"run_id": "x", "scaler": {}}) == s


def test_record_validation_keeps_best_counts_stalls_and_anneals():
    c = TrainConfig.from_options(corpus=("x",), schedule="plateau", plateau_patience=1, plateau_factor=0.5, patience=3)
    s = RunState()
    outcomes = [record_validation(s, loss, c) for loss in (3.0, 2.0, 2.5, 2.4, 2.6)]
    assert outcomes == [(True, False), (True, False), (False, False), (False, False), (False, True)]
    assert s.best_valid == 2.0 and s.last_valid == 2.6 and s.plateau_scale == 0.5


def test_limits_report_progress_and_which_limit_is_reached():
    lim = Limits(epochs=2.0, max_steps=100, time_budget=60.0, columns=1000)
    s = RunState(step=10, epoch=1, pos=0)
    assert lim.progress(s, 6.0) == pytest.approx(0.5)  # the epochs are the furthest along
    assert lim.reached(s) is None and not lim.out_of_time(59.9) and lim.out_of_time(60.0)
    assert lim.reached(RunState(step=100)) == "max steps"
    assert lim.reached(RunState(step=20, epoch=2)) == "epochs"


def test_loss_meter_is_token_weighted_and_resets():
    from charlm.runtime.distributed import DistContext

    m = LossMeter(torch.device("cpu"))
    assert m.take(DistContext()) is None
    m.add(torch.tensor(2.0), 30)
    m.add(torch.tensor(1.0), 10)
    assert m.take(DistContext()) == pytest.approx(1.75)
    assert m.take(DistContext()) is None


def test_train_step_updates_the_weights_and_cuts_the_graph_at_the_window_edge():
    torch.manual_seed(0)
    c = TrainConfig.from_options(
        corpus=("x",), hidden_size=8, dropout=0.1, batch_size=3, lr=3e-3, ar=0.1, tar=0.1, clip=1.0
    )
    model = RNNLanguageModel(c.model_config(vocab_size=11))
    opt = make_optimizer(c, model)
    x, y = torch.randint(0, 11, (3, 5)), torch.randint(0, 11, (3, 5))
    before = [p.detach().clone() for p in model.parameters()]
    loss, hidden = train_step(model, opt, None, x, y, None, c, None)
    assert loss.shape == () and not loss.requires_grad
    assert all(not h.requires_grad and h.grad_fn is None for h in hidden)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_tar_penalises_the_raw_last_layer_output_and_ar_the_dropped_one(monkeypatch):
    """AWD-LSTM: AR on the dropped-out output, TAR on the raw output of the last layer."""
    torch.manual_seed(0)
    c = TrainConfig.from_options(
        corpus=("x",), num_layers=1, hidden_size=6, emb_size=4, dropout=0.5, locked_dropout=False,
        batch_size=2, lr=3e-3, ar=0.0, tar=1.0, clip=0.0,
    )  # fmt: skip
    model = RNNLanguageModel(c.model_config(vocab_size=5))
    seen = {}
    real = RNNLanguageModel.forward

    def spy(self, ids, state=None, with_activations=False, targets=None):
        out = real(self, ids, state, with_activations, targets)
        if with_activations:
            seen["dropped"], seen["raw"] = out.activations
        return out

    monkeypatch.setattr(RNNLanguageModel, "forward", spy)
    model.train()
    train_step(
        model,
        make_optimizer(c, model),
        None,
        torch.zeros(2, 4, dtype=torch.long),
        torch.zeros(2, 4, dtype=torch.long),
        None,
        c,
        None,
    )
    raw, dropped = seen["raw"], seen["dropped"]
    assert raw.shape == dropped.shape == (2, 4, 6)
    assert (dropped == 0).float().mean() > 0.2 and (raw == 0).float().mean() < 0.05  # only one went through dropout
    assert torch.allclose(dropped[dropped != 0], (raw * 2)[dropped != 0])  # dropped = raw / (1 - p) where kept


def test_activation_regularisation_penalises_dropped_for_ar_and_raw_steps_for_tar():
    raw = torch.tensor([[[1.0], [1.0], [3.0]]])  # (B=1, T=3, H=1): one jump of 2
    dropped = torch.tensor([[[2.0], [0.0], [0.0]]])
    ar = activation_regularisation(dropped, raw, ar=1.0, tar=0.0)
    tar = activation_regularisation(dropped, raw, ar=0.0, tar=1.0)
    assert ar.item() == pytest.approx(4.0 / 3)  # mean of dropped^2: the raw values play no part
    assert tar.item() == pytest.approx((0.0 + 4.0) / 2)  # mean squared step of raw: dropped plays no part
    assert activation_regularisation(dropped, raw, 0.0, 0.0).item() == 0.0
