"""The adaptive softmax: an exact distribution, a training loss that agrees with it, checkpoints, choice."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from charlm.checkpoint import store as ckpt
from charlm.errors import ConfigError
from charlm.evaluation.scoring import evaluate_ids
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.training import autosize
from charlm.training.config import TrainConfig

V, CUTS = 23, (5, 11)


def tiny(seed: int = 0, **kw) -> RNNLanguageModel:
    torch.manual_seed(seed)
    opts = dict(vocab_size=V, hidden_size=6, emb_size=6, tie_weights=True, adaptive_cutoffs=CUTS) | kw
    model = RNNLanguageModel(ModelConfig(**opts))
    with torch.no_grad():  # spread the scores so that every cluster matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("tie", [True, False])
def test_the_distribution_covers_the_vocabulary_and_sums_to_one(tie):
    model = tiny(tie_weights=tie, emb_size=4)
    logp = model(torch.randint(0, V, (3, 7))).logits
    assert logp.shape == (3, 7, V)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3, 7), atol=1e-5)
    step_logp, _ = model.step(torch.randint(0, V, (4,)))
    assert torch.allclose(step_logp.exp().sum(-1), torch.ones(4), atol=1e-5)


def test_step_equals_forward():
    model = tiny()
    ids = torch.randint(0, V, (2, 5))
    whole = model(ids).logits
    state = None
    for t in range(5):
        one, state = model.step(ids[:, t], state)
        assert torch.allclose(one, whole[:, t], atol=1e-5)


@pytest.mark.parametrize("cuts", [CUTS, None])
def test_the_training_loss_is_the_nll_of_the_log_probs(cuts):
    model = tiny(adaptive_cutoffs=cuts)
    x, y = torch.randint(0, V, (3, 8)), torch.randint(0, V, (3, 8))
    logp = model(x).logits
    expected = F.cross_entropy(logp.reshape(-1, V), y.reshape(-1))  # log-probs as logits: the NLL
    loss = model(x, targets=y).loss
    assert loss.shape == () and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    by_hand = -logp.gather(-1, y[..., None]).mean() if cuts else expected
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_perplexity_through_evaluate_equals_the_full_vocabulary_computation():
    model = tiny()
    ids = np.random.default_rng(0).integers(0, V, 200)
    score = evaluate_ids(model, ids, 1, chars=len(ids), nbytes=len(ids), oov=0, exact=True)
    x = torch.from_numpy(np.concatenate([[1], ids[:-1]]))[None]
    logp = torch.log_softmax(model(x).logits[0].double(), -1)  # a full softmax over the same probabilities
    nll = -logp.gather(1, torch.from_numpy(ids)[:, None]).mean().item()
    assert score.tokens == len(ids) and score.loss == pytest.approx(nll, rel=1e-5)
    assert score.perplexity == pytest.approx(math.exp(nll), rel=1e-4)


@pytest.mark.parametrize("cuts", [CUTS, None])
def test_the_training_paths_gradients_equal_the_log_probs_ones(cuts):
    """Training's path (sparse lookup gradient, decoder cut before the lookup) gives every
    parameter the gradient of the NLL of the exact log-probabilities."""
    grads = []
    for targets in (False, True):
        model = tiny(adaptive_cutoffs=cuts).train()  # no dropout: both passes see the same function
        torch.manual_seed(1)
        x, y = torch.randint(0, V, (3, 8)), torch.randint(0, V, (3, 8))
        if targets:
            loss = model(x, targets=y).loss
        else:
            loss = F.cross_entropy(model(x).logits.reshape(-1, V), y.reshape(-1))  # log-probs or logits
        loss.backward()
        assert all(p.grad is not None and not p.grad.is_sparse for p in model.parameters())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, atol=1e-6), name


@pytest.mark.parametrize("y", [[0, 4, 5, 10, 11, 22, 3, 7, 15], [0, 4, 12, 22, 3, 1, 2, 13, 4]])  # one cluster empty
def test_gradients_of_the_loss_are_exact(y):
    """Training on a CPU takes _AdaptiveNLL's hand-written backward: against finite differences."""
    model = tiny(emb_size=3, hidden_size=3).double()
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    params = (model.decoder.weight, model.decoder.bias, model.clusters.weight, model.clusters.bias)
    assert torch.autograd.gradcheck(lambda x, *p: model.loss(x, torch.tensor(y)), (x, *params))


def test_the_hand_written_backward_equals_autograds():
    """The same NLL through autograd (the decoder cut into pieces, as on a GPU) and through
    _AdaptiveNLL: equal values and gradients, a cluster without targets included."""
    model = tiny().train()
    x = torch.randn(40, 6, requires_grad=True)
    y = torch.randint(0, 11, (40,))  # the last cluster [11, 23) gets no target
    got = []
    for pieces in (model._decoder_pieces(), None):  # cut: autograd's backward; None: the hand-written one
        model.zero_grad()
        x.grad = None
        nll = model.nll(x, y, pieces)
        (nll * torch.linspace(0.5, 1.5, 40)).sum().backward()
        got.append([nll.detach(), x.grad, *(p.grad for p in model.parameters() if p.grad is not None)])
    assert len(got[0]) == len(got[1])
    for a, b in zip(*got):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.count_nonzero(model.decoder.weight.grad[11:]) == 0


def test_config_and_weights_round_trip_and_old_configs_load_as_full_softmax(tmp_path):
    model = tiny(seed=3)
    config = ModelConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))  # JSON turns the tuple into a list
    assert config == model.config and config.adaptive_cutoffs == CUTS
    save_file(ckpt.model_tensors(model), tmp_path / "w.safetensors")
    fresh = RNNLanguageModel(config).eval()
    ckpt.load_model_tensors(fresh, load_file(tmp_path / "w.safetensors"), tmp_path / "w.safetensors")
    ids = torch.randint(0, V, (2, 4))
    assert torch.equal(fresh(ids).logits, model(ids).logits)
    old = {k: v for k, v in model.config.to_dict().items() if k != "adaptive_cutoffs"}
    assert ModelConfig.from_dict(old).adaptive_cutoffs is None
    flat = TrainConfig.from_options(corpus=("x",)).options()  # checkpoint.json's "train" before the sections
    assert TrainConfig.from_dict(flat).model.adaptive_softmax is None
    del flat["adaptive_softmax"]
    assert TrainConfig.from_dict(flat).model.adaptive_softmax is False  # a run that predates it


@pytest.mark.parametrize("cuts", [(), (0, 4), (5, 5), (5, V)])
def test_bad_cutoffs_are_a_config_error(cuts):
    with pytest.raises(ConfigError, match="cutoffs"):
        ModelConfig(vocab_size=V, adaptive_cutoffs=cuts)


def test_clusters_are_chosen_from_frequencies_and_only_where_they_pay():
    zipf = (1e6 / np.arange(1, 20_001)).astype(np.int64)
    cuts = autosize.choose_cutoffs(zipf)
    assert cuts is not None and list(cuts) == sorted(cuts) and cuts[-1] < len(zipf)
    assert autosize.choose_cutoffs(zipf[:300]) is None  # too small to gain
    word = TrainConfig.from_options(corpus=("x",), level="word")
    on, why = autosize.output_layer(word, zipf)
    assert on.model.adaptive_softmax and on.model.adaptive_cutoffs == cuts and "adaptive softmax" in why
    assert autosize.output_layer(word, zipf[:2000])[0].model.adaptive_softmax is False  # below ADAPTIVE_MIN_VOCAB
    assert (
        autosize.output_layer(TrainConfig.from_options(corpus=("x",)), zipf)[0].model.adaptive_softmax is False
    )  # char level
    with pytest.raises(ConfigError, match="too small for an adaptive softmax"):
        autosize.output_layer(TrainConfig.from_options(corpus=("x",), adaptive_softmax=True), zipf[:100])


def test_a_word_run_with_an_adaptive_softmax_checkpoints_evaluates_and_generates(tmp_path, tiny_corpus):
    from charlm.checkpoint.store import load_for_inference
    from charlm.evaluation.scoring import evaluate_text
    from charlm.sampling import DecodingOptions, generate
    from charlm.training import train

    out = tmp_path / "run"
    c = TrainConfig.from_options(
        corpus=(str(tiny_corpus),), out=str(out), level="word", hidden_size=8, dropout=0.0, batch_size=2, lr=1e-2,
        max_steps=6, eval_interval=3, adaptive_softmax=True, adaptive_cutoffs=(4, 9),
    )  # fmt: skip
    result = train(c)
    model, tok, info = load_for_inference(out)
    assert info.model_config.adaptive_cutoffs == (4, 9) and model.config.tie_weights
    score = evaluate_text(model, tok, tiny_corpus.read_text()[:400], exact=True)
    assert math.isfinite(score.loss) and result.best_valid_loss is not None
    with torch.no_grad():
        model.decoder.bias[tok.unk_id] += 50.0  # <unk> now the model's first choice ...
    [gen] = generate(model, tok, "the cat", DecodingOptions(max_new_tokens=5), torch.Generator().manual_seed(0))
    assert gen.text and "<unk>" not in gen.text  # ... and masked all the same


@pytest.mark.parametrize("cuts", [CUTS, None])
def test_output_bias_starts_at_the_unigram_distribution(cuts):
    """init_output_bias: for a zero feature vector (only the biases speak) the model's
    distribution is the add-one smoothed unigram one, for a full and an adaptive softmax."""
    model = tiny(adaptive_cutoffs=cuts)
    counts = torch.randint(0, 50, (V,))
    model.init_output_bias(counts)
    logp = model.log_probs(torch.zeros(1, model.decoder.in_features))[0]
    want = ((counts + 1.0) / (counts + 1.0).sum()).log().float()
    assert torch.allclose(logp, want, atol=1e-5)
