"""Training from the token cache: memory maps widened per window, validation from stored ids, data order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from charlm.checkpoint import store as ckpt
from charlm.cli import main
from charlm.data.batching import batchify, epoch_offset, get_batch, window_length
from charlm.training import TrainConfig, train
from charlm.training import prepare as train_mod

TINY = dict(hidden_size=12, emb_size=6, num_layers=1, batch_size=4, bptt=16, eval_interval=4, log_interval=2,
            eval_streams=2, device="cpu", seed=3)  # fmt: skip


def config(corpus, out, **kw) -> TrainConfig:
    return TrainConfig.from_options(**(dict(corpus=(str(corpus),), out=str(out), max_steps=8) | TINY | kw))


def losses(history):
    return [(r["type"], r["step"], r.get("loss", r.get("valid_loss"))) for r in history]


def test_memory_mapped_and_in_memory_ids_give_identical_batches_and_losses(tiny_corpus, tmp_path, monkeypatch):
    c = config(tiny_corpus, tmp_path / "a", dropout=0.2)
    data = train_mod.prepare_data(c)
    assert isinstance(data.train_ids, np.memmap) and data.train_ids.dtype == np.uint8  # 1 byte per char, on disk
    rows_map, rows_mem = batchify(data.train_ids, 4), batchify(np.array(data.train_ids), 4)
    for i in (0, 16, 32):
        for a, b in zip(get_batch(rows_map, i, 16), get_batch(rows_mem, i, 16)):
            assert a.dtype == torch.int64 and torch.equal(a, b)
    mapped = train(c)
    in_memory = dataclasses.replace(data, train_ids=np.array(data.train_ids), valid_ids=np.array(data.valid_ids))
    monkeypatch.setattr(train_mod, "prepare_data", lambda *a, **k: in_memory)
    assert losses(train(config(tiny_corpus, tmp_path / "b", dropout=0.2)).history) == losses(mapped.history)


def test_a_rerun_reuses_the_token_cache(tiny_corpus, tmp_path):
    seen = []

    class Watch:
        on_log = on_eval = on_end = staticmethod(lambda *_: None)

        def on_start(self, info):
            seen.append(info)

        def on_prepare(self, phase, done, total):
            seen.append(phase)

    cache = tmp_path / "cache"
    train(config(tiny_corpus, tmp_path / "a", cache_dir=str(cache)), observer=Watch())
    assert "fitting" in seen and "encoding" in seen and seen[-1]["cache_reused"] is False
    seen.clear()
    train(config(tiny_corpus, tmp_path / "b", cache_dir=str(cache)), observer=Watch())
    assert seen == [seen[0]] and seen[0]["cache_reused"] is True  # no fitting or encoding the second time
    assert seen[0]["cache"].startswith(str(cache))


def test_validation_can_be_capped_and_spreads_what_it_scores(tiny_corpus, tmp_path):
    full = train(config(tiny_corpus, tmp_path / "full", max_steps=4))
    capped = train(config(tiny_corpus, tmp_path / "capped", max_steps=4, eval_tokens=64))
    n_full = full.history[-1]["valid_tokens"]
    n_capped = capped.history[-1]["valid_tokens"]
    assert n_full > 64 and 32 <= n_capped <= 64
    assert capped.history[-1]["valid_loss"] == pytest.approx(full.history[-1]["valid_loss"], rel=0.2)


def test_a_run_inside_its_own_corpus_directory_never_reads_its_checkpoints(tmp_path, tiny_text, monkeypatch):
    corpus = tmp_path / "texts"
    corpus.mkdir()
    (corpus / "a.txt").write_text(tiny_text, encoding="utf-8")
    monkeypatch.chdir(corpus)
    flags = ["--hidden", "12", "--emb", "6", "--layers", "1", "--batch-size", "4", "--bptt", "16", "--quiet"]
    first = CliRunner().invoke(main, ["train", ".", *flags, "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    out = corpus / "checkpoints" / "texts"
    assert ckpt.is_checkpoint_dir(out)  # checkpoints/<directory name>, inside the corpus directory
    again = CliRunner().invoke(main, ["train", ".", "--resume", "--max-steps", "4", "--quiet"])
    assert again.exit_code == 0, again.output  # not "looks binary": the run's own files are not corpus
    elsewhere = CliRunner().invoke(main, ["train", ".", "--out", "inner/run", *flags, "--max-steps", "2"])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert CliRunner().invoke(main, ["train", ".", "--out", "inner/run", "--resume", "--max-steps", "3"]).exit_code == 0


def test_each_epoch_after_the_first_starts_at_a_random_column(tiny_corpus, tmp_path):
    assert epoch_offset(3, 0, 16) == 0
    offsets = [epoch_offset(3, e, 16) for e in range(1, 40)]
    assert all(0 <= o < 16 for o in offsets) and len(set(offsets)) > 5
    assert offsets == [epoch_offset(3, e, 16) for e in range(1, 40)]  # repeatable, so resume is exact


def test_variable_bptt_lengths_follow_awd_lstm_and_resume_exactly(tiny_corpus, tmp_path):
    lengths = [window_length(3, s, 70, True) for s in range(2000)]
    assert min(lengths) >= 5 and max(lengths) <= 90 and 55 <= np.mean(lengths) <= 70
    assert sum(n < 50 for n in lengths) > 40  # the half-length windows
    assert [window_length(3, s, 70, False) for s in range(5)] == [70] * 5
    kw = dict(bptt_jitter=True, max_steps=10, log_interval=2, eval_interval=5, dropout=0.1)
    a = train(config(tiny_corpus, tmp_path / "a", **kw))
    b1 = train(config(tiny_corpus, tmp_path / "b", **kw), stop_after=lambda step: step == 4)
    b2 = train(config(tiny_corpus, tmp_path / "b", **kw), resume=True)
    assert b2.step == 10
    assert [x[:2] for x in losses(b1.history) + losses(b2.history)] == [x[:2] for x in losses(a.history)]
    for (_, _, x), (_, _, y) in zip(losses(b1.history) + losses(b2.history), losses(a.history)):
        assert x == pytest.approx(y, rel=1e-6)
