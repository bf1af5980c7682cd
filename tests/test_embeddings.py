"""Contextual string embeddings equal the LM's own states at each word's boundary; a backward LM (train
--reverse) is the forward LM of the reversed text; a tagger fed by two LMs trains, saves and tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import charlm
from charlm.checkpoint import read_metrics, write_inference_checkpoint
from charlm.cli import main
from charlm.data import fit_tokenizer
from charlm.embeddings import boundaries
from charlm.errors import ConfigError
from charlm.models import ModelConfig, RNNLanguageModel

SENTENCES = [["The", "cat", "sat", "."], ["A", "dog"], ["Hi"]]


def tiny_lm(tmp_path: Path, name: str, reverse: bool, text: str) -> Path:
    torch.manual_seed(len(name))
    tok = fit_tokenizer("char", text)
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, hidden_size=12, emb_size=6, num_layers=2))
    train = {"data": {"corpus": ["x"], "reverse": reverse}}
    return write_inference_checkpoint(tmp_path / name, model, tok, train)


@pytest.mark.parametrize("reverse", [False, True])
def test_embeddings_are_the_lm_states_at_word_boundaries(tmp_path: Path, tiny_text: str, reverse: bool) -> None:
    lm = charlm.load(tiny_lm(tmp_path, "lm", reverse, tiny_text + "TCAHi."), device="cpu")
    assert lm.reverse is reverse
    got = lm.embed(SENTENCES)
    assert [tuple(g.shape) for g in got] == [(4, 12), (2, 12), (1, 12)]
    for words, emb in zip(SENTENCES, got):
        text = " ".join(words)
        read = text[::-1] if reverse else text
        ids = torch.tensor([[lm.tokenizer.encode("\n")[0], *lm.tokenizer.encode(read)]])
        with torch.no_grad():
            states, _ = lm.model.features(ids)  # (1, L, D): the state after each character
        for i, w in enumerate(words):
            start = text.index(w, sum(len(x) + 1 for x in words[:i]))
            # forward: after the word's last character; backward: after its first, read last
            at = start + len(w) if not reverse else len(text) - start
            assert read[at - 1] == (w[-1] if not reverse else w[0])
            assert torch.allclose(emb[i], states[0, at], atol=1e-6)
    again = lm.embed([SENTENCES[1]])  # from the cache: the same tensors
    assert torch.equal(again[0], got[1])


def test_boundaries_of_a_sentence() -> None:
    text, at = boundaries(["ab", "c", "def"], reverse=False)
    assert text == "ab c def" and at.tolist() == [2, 4, 8]
    text, at = boundaries(["ab", "c", "def"], reverse=True)
    assert text == "fed c ba" and at.tolist() == [8, 5, 3]  # after "\\n": the a, c, d of "fed c ba"
    assert isinstance(at, np.ndarray)


def test_embed_refuses_what_is_not_a_list_of_word_lists(tmp_path: Path, tiny_text: str) -> None:
    lm = charlm.load(tiny_lm(tmp_path, "lm", False, tiny_text), device="cpu")
    with pytest.raises(ConfigError, match="list of sentences"):
        lm.embed(["The cat"])


def test_a_backward_lm_is_the_forward_lm_of_the_reversed_text(tmp_path: Path, tiny_text: str) -> None:
    """`train --reverse` on a text and a forward run on the text reversed learn the same model."""
    train_text, valid_text = tiny_text[:1000], tiny_text[1000:]
    files = {}
    for name, content in {"t": train_text, "v": valid_text, "rt": train_text[::-1], "rv": valid_text[::-1]}.items():
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text(content, encoding="utf-8")
    opts = dict(max_steps=12, eval_interval=6, hidden_size=16, batch_size=4, bptt=20, seed=5, baselines=False)
    back = charlm.train(files["t"], valid=(str(files["v"]),), reverse=True, out=str(tmp_path / "b"), **opts)
    fwd = charlm.train(files["rt"], valid=(str(files["rv"]),), out=str(tmp_path / "f"), **opts)
    assert back.last_valid_loss == pytest.approx(fwd.last_valid_loss, rel=1e-6)
    losses = [[r["loss"] for r in read_metrics(tmp_path / d) if r.get("type") == "train"] for d in ("b", "f")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    b, f = charlm.load(tmp_path / "b", device="cpu"), charlm.load(tmp_path / "f", device="cpu")
    assert b.reverse and not f.reverse
    # the backward LM reads a text backwards: it scores "the cat sat" as the forward LM of the reversed
    # text scores "tas tac eht", and its perplexity of the validation text is its validation figure
    assert b.score("the cat sat").logprob == pytest.approx(f.score("tas tac eht").logprob, rel=1e-6)
    assert b.perplexity(files["v"], exact=True).loss == pytest.approx(f.perplexity(files["rv"], exact=True).loss)
    assert b.perplexity(text=valid_text).loss == pytest.approx(back.last_valid_loss, rel=1e-5)
    # charlm perplexity scores files as written, and says so for a backward LM
    r = CliRunner().invoke(main, ["perplexity", str(tmp_path / "b"), str(files["v"])])
    assert r.exit_code == 0 and "a backward LM (trained with --reverse)" in r.output


def test_a_tagger_fed_by_a_forward_and_a_backward_lm(tmp_path: Path, tiny_text: str) -> None:
    fwd = tiny_lm(tmp_path, "fwd", False, tiny_text + "JohnlvsiNwYrkMaryPs.")
    bwd = tiny_lm(tmp_path, "bwd", True, tiny_text + "JohnlvsiNwYrkMaryPs.")
    data = tmp_path / "ner.conll"
    data.write_text("John B-PER\nlives O\nin O\nNew B-LOC\nYork I-LOC\n\nMary B-PER\nin O\nParis B-LOC\n")
    out = tmp_path / "tagger"
    charlm.train(
        data, model="tag", valid=(str(data),), out=str(out), embeddings=(str(fwd), str(bwd)), max_steps=60,
        eval_interval=30, hidden_size=16, emb_size=8, num_layers=1, batch_size=2, lr=1e-2, dropout=0.0,
        baselines=False,
    )  # fmt: skip
    tagger = charlm.load(out, device="cpu")
    assert len(tagger.model.lms) == 2 and [e.reverse for e in tagger.model.lms] == [False, True]
    # the LMs travel inside the tagger's checkpoint, frozen: their weights are the checkpoints' own
    lm = charlm.load(bwd, device="cpu").model.state_dict()
    assert all(torch.equal(v, tagger.model.lms[1].lm.state_dict()[k]) for k, v in lm.items())
    assert not any(p.requires_grad for e in tagger.model.lms for p in e.parameters())
    assert tagger.evaluate(data).accuracy == 1.0
    assert tagger.tag("Mary lives in New York")[0].tags == ("B-PER", "O", "O", "B-LOC", "I-LOC")
