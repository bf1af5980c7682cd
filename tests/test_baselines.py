"""The unigram and Kneser-Ney baselines of a run, the not-learning warning and the overfitting guard."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from charlm.checkpoint import store as ckpt
from charlm.cli import main
from charlm.evaluation.scoring import context_id, evaluate_ids
from charlm.models.ngram import KneserNeyModel
from charlm.training import TrainConfig, baselines, loop, prepare_data, train, train_ngram

TINY = ["--hidden", "16", "--emb", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]


def config(corpus: Path, out: Path, **kw) -> TrainConfig:
    """A tiny run: 1x16 LSTM, 4 streams of 16 steps, a validation every 2 steps."""
    base = dict(
        corpus=(str(corpus),), out=str(out), hidden_size=16, emb_size=8, num_layers=1, batch_size=4, bptt=16,
        max_steps=8, eval_interval=2, log_interval=2, eval_streams=4, warmup_steps=2, device="cpu", seed=3,
        sample_length=0,
    )  # fmt: skip
    return TrainConfig.from_options(**(base | kw))


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["train", *map(str, args)])


def warnings_of(history: list[dict]) -> list[str]:
    return [w for r in history for w in r.get("warnings", ())]


# ---------------------------------------------------------------- the figures
def test_the_unigram_baseline_is_add_one_counts_scored_on_every_validation_token(tmp_path):
    """By hand: p(w) = (c(w) + 1) / (N + V) from the training ids, every validation token scored
    (the line end read first is context, not a target), an unknown character as <unk>."""
    train_text, valid_text = "abba\naab\n" * 20, "abz\nba\n"
    (tmp_path / "t.txt").write_text(train_text, encoding="utf-8")
    (tmp_path / "v.txt").write_text(valid_text, encoding="utf-8")
    c = config(tmp_path / "t.txt", tmp_path / "run", valid=(str(tmp_path / "v.txt"),), eval_tokens=0)
    data = prepare_data(c)
    tok = data.tokenizer
    counts = np.bincount(tok.encode_array(train_text), minlength=tok.vocab_size).astype(float)
    p = (counts + 1) / (counts.sum() + tok.vocab_size)
    targets = tok.encode_array(valid_text)
    assert len(targets) == len(valid_text) and tok.unk_id in targets  # "z" is scored, as <unk>
    expected = -np.log(p[targets]).mean()
    b = baselines.compute(data, c)
    assert b["unigram"]["loss"] == pytest.approx(expected, rel=1e-12)
    assert b["unigram"]["ppl"] == pytest.approx(math.exp(expected))
    assert b["tokens"] == len(valid_text)


def test_the_kn_baseline_is_what_train_model_kn_reports(tiny_corpus, tmp_path):
    c = config(tiny_corpus, tmp_path / "run", eval_tokens=100)  # --eval-tokens limits both alike
    data = prepare_data(c)
    b = baselines.compute(data, c)
    model = KneserNeyModel.estimate(data.train_ids, data.tokenizer.vocab_size, 7)  # the char level's order
    score = evaluate_ids(
        model, data.valid_ids, context_id(data.tokenizer), chars=data.valid_chars, nbytes=data.valid_bytes,
        oov=data.valid_oov, max_tokens=100,
    )  # fmt: skip
    assert b["kn_order"] == 7 and b["kn"]["loss"] == score.loss and b["tokens"] == score.tokens == 100
    _, rec = train_ngram(
        TrainConfig.from_options(corpus=(str(tiny_corpus),), out=str(tmp_path / "kn"), model="kn", eval_tokens=100)
    )
    assert b["kn"]["loss"] == pytest.approx(rec["valid_loss"], rel=1e-12)


def test_kn_is_skipped_above_the_size_bound_and_says_why(tiny_corpus, tmp_path):
    c = config(tiny_corpus, tmp_path / "run")
    b = baselines.compute(prepare_data(c), c, kn_max_tokens=100)
    assert b["kn"] is None and "text too large" in b["kn_skipped"] and b["unigram"]["loss"] > 0


# ---------------------------------------------------------------- a run
def test_a_run_shows_the_baselines_at_start_and_in_the_summary(tiny_corpus, out_dir):
    result = invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "4", "--eval-interval", "2")
    assert result.exit_code == 0, result.output
    start = [ln for ln in result.stderr.splitlines() if "baselines on the validation text" in ln]
    assert len(start) == 1 and "unigram 2." in start[0] and "Kneser-Ney 7-gram" in start[0]
    summary = [ln for ln in result.stdout.splitlines() if ln.startswith("  baselines:")]
    assert len(summary) == 1 and "unigram ppl" in summary[0] and "Kneser-Ney 7-gram ppl" in summary[0]
    assert "best is" in summary[0]
    assert "worse than the Kneser-Ney 7-gram baseline" in result.stderr  # a 4-step model on a repetitive text
    stored = [r for r in ckpt.read_metrics(out_dir) if r["type"] == "baselines"]
    _, saved = ckpt.load_training_state(out_dir)
    assert len(stored) == 1 and stored[0]["unigram"] == saved["trainer"]["baselines"]["unigram"]


def test_no_baselines_turns_them_off(tiny_corpus, out_dir):
    result = invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "2", "--no-baselines")
    assert result.exit_code == 0, result.output
    assert "unigram" not in result.output and "baselines:" not in result.output
    assert not [r for r in ckpt.read_metrics(out_dir) if r["type"] == "baselines"]


def test_a_resume_shows_the_stored_baselines_without_measuring_again(tiny_corpus, out_dir, monkeypatch):
    assert invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "2", "--quiet").exit_code == 0
    first = ckpt.load_training_state(out_dir)[1]["trainer"]["baselines"]

    def refuse(*args, **kwargs):
        raise AssertionError("measured again on --resume")

    monkeypatch.setattr(baselines, "compute", refuse)
    result = invoke(tiny_corpus, "--out", out_dir, "--resume", "--max-steps", "4")
    assert result.exit_code == 0, result.output
    assert f"unigram {first['unigram']['loss']:.3f}" in result.stderr
    assert ckpt.load_training_state(out_dir)[1]["trainer"]["baselines"] == first


def test_a_model_that_does_not_learn_is_told_so_once(tiny_corpus, tmp_path):
    """lr 1e-9: the output stays at its unigram start (init_output_bias), validation at the unigram figure."""
    result = train(config(tiny_corpus, tmp_path / "run", lr=1e-9))
    said = [w for w in warnings_of(result.history) if "no better than a unigram model" in w]
    assert len(said) == 1 and "--hidden" in said[0] and "--lr" in said[0]
    warned = next(r for r in result.history if r.get("warnings"))
    assert warned["step"] >= 4  # at least 25% of the run and 2 validations: never at the first validation
    assert abs(warned["valid_loss"] - result.baselines["unigram"]["loss"]) < 0.05


def test_a_learning_model_is_not_warned(tiny_corpus, tmp_path):
    result = train(config(tiny_corpus, tmp_path / "run", lr=0.03, max_steps=16, eval_interval=4))
    assert result.best_valid_loss < result.baselines["unigram"]["loss"] - baselines.UNIGRAM_MARGIN
    assert not [w for w in warnings_of(result.history) if "unigram" in w]


# ---------------------------------------------------------------- overfitting
def test_overfitting_is_noticed_three_validations_past_the_best_and_stops_after_eight():
    best = 1.54
    rising = [best * (1 + 0.02 * k) for k in range(1, 9)]  # 2%, 4%, ... above the best
    verdicts = baselines.overfit_verdicts([2.0, 1.7, best, *rising])
    assert verdicts[:5] == [None] * 5  # two validations past the best: noise
    assert verdicts[5:10] == ["notice"] * 5  # three to seven past it, 6-14% above
    assert verdicts[10] == "stop"  # eight past it, 16% above
    assert baselines.overfit_verdicts([2.0, 1.7, best, *rising], stop_allowed=False).count("stop") == 0


def test_noise_says_nothing_and_only_a_new_best_restarts_the_count():
    assert baselines.overfit_verdicts([1.0, 1.01, 1.02, 1.025, 1.0, 1.02, 1.01]) == [None] * 7  # under 3%
    assert baselines.overfit_verdicts([1.0, 1.05, 1.06, 0.99, 1.03, 1.04]) == [None] * 6  # a new best at 0.99
    assert baselines.overfit_verdicts([1.0, 1.05, 1.03, 1.04])[-1] == "notice"  # a fall that is no new best
    # the 58k-word run that rose and fell around 150 after its best of 127 (ln: 4.844) is told, then stopped
    noisy = [math.log(p) for p in (154.3, 129.1, 127.3, 127.0, 135.8, 147.7, 145.5, 150.5, 149.8, 152.7, 160.2,
                                   155.2, 156.9, 157.1, 162.7)]  # fmt: skip
    verdicts = baselines.overfit_verdicts(noisy)
    assert verdicts.index("notice") == 7 and verdicts.index("stop") == 14  # ppl 150.5 (3.5%), 162.7 (5.1%)


def scripted(monkeypatch, losses: list[float]) -> None:
    """Validation reads its losses from a list instead of scoring the model."""
    it = iter(losses)

    def validate(self):
        loss = next(it)
        return {"type": "valid", "step": self.state.step, "epoch": 0, "valid_loss": loss,
                "valid_ppl": math.exp(loss), "valid_bpc": loss, "valid_tokens": 1, "valid_oov": 0}  # fmt: skip

    monkeypatch.setattr(loop.Loop, "validate", validate)


OVERFIT = [2.0, 1.5, 1.52, 1.55, 1.58, 1.6, 1.63, 1.66, 1.7, 1.75, 1.8]  # best at the 2nd, then rising


def test_an_overfitting_run_stops_eight_validations_past_its_best_and_keeps_it(tiny_corpus, tmp_path, monkeypatch):
    scripted(monkeypatch, OVERFIT)
    result = train(config(tiny_corpus, tmp_path / "run", max_steps=40, eval_interval=2))
    assert result.status == "overfitting"
    assert result.step == 2 * 10 and result.best_step == 4 and result.best_valid_loss == 1.5  # 1.75: 8 past, 17%
    said = warnings_of(result.history)
    assert len(said) == 2 and "overfitting" in said[0] and "step-4 checkpoint" in said[0]
    assert "stopping" in said[1] and ckpt.weights_metadata(tmp_path / "run", "best")["step"] == 4


def test_patience_turns_the_automatic_stop_off(tiny_corpus, tmp_path, monkeypatch):
    scripted(monkeypatch, OVERFIT)
    result = train(config(tiny_corpus, tmp_path / "run", max_steps=20, eval_interval=2, patience=20))
    assert result.status == "max steps" and result.step == 20
    assert [w for w in warnings_of(result.history) if "overfitting" in w]  # the notice still comes


def test_the_cli_ends_an_overfitting_run_normally(tiny_corpus, out_dir, monkeypatch):
    scripted(monkeypatch, OVERFIT)
    result = invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "40", "--eval-interval", "2")
    assert result.exit_code == 0, result.output
    assert "stopped by: overfitting" in result.stdout and "at step 4" in result.stdout
    assert result.stderr.count("the model is overfitting") == 1
