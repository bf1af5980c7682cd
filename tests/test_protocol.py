"""The model protocol (charlm.models.LanguageModel): every member, called on each kind of model.

Evaluation, sampling and checkpoints call these members and nothing else, so each kind must give
the same answers its own forward pass gives: step == forward at T = 1, token_nll == the
cross-entropy of forward's logits, warm_state == forward's state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.models import (
    MODEL_KINDS,
    KneserNeyModel,
    LanguageModel,
    LMOutput,
    ModelConfig,
    RNNLanguageModel,
    config_from_dict,
)

V = 7


def build(kind: str) -> LanguageModel:
    if kind == "rnn":
        torch.manual_seed(0)
        return RNNLanguageModel(ModelConfig(vocab_size=V, num_layers=2, hidden_size=8, emb_size=4)).eval()
    ids = np.random.default_rng(0).integers(0, V, size=400)
    return KneserNeyModel.estimate(ids, V, 3)


@pytest.fixture(params=MODEL_KINDS)
def model(request) -> LanguageModel:
    return build(request.param)


def test_the_kinds_are_the_models_and_their_configs(model: LanguageModel) -> None:
    assert model.kind in MODEL_KINDS and model.kind == model.config.kind
    assert model.vocab_size == model.config.vocab_size == V
    assert model.state_floats == model.config.state_floats
    assert model.device == torch.device("cpu")
    assert isinstance(model.exact_only, bool) and model.exact_only == (model.kind == "kn")
    assert model.describe() == ("RNN" if model.kind == "rnn" else "KN 3-gram")
    assert model.config.summary() == ("2 x 8 LSTM" if model.kind == "rnn" else "Kneser-Ney 3-gram")
    assert config_from_dict(model.kind, model.config.to_dict()) == model.config
    weights = list(model.parameters())
    assert (len(weights) > 0) == (model.kind == "rnn")  # an n-gram model has no weights to adapt
    assert (model.state_floats > 0) == (model.kind == "rnn")  # its state is token ids
    model.train(False)
    assert model.training is False


def test_forward_step_token_nll_and_warm_state_agree(model: LanguageModel) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (3, 6), generator=g)
    y = torch.randint(0, V, (3, 6), generator=g)
    state = model.init_state(3)
    assert all(s.size(1) == 3 for s in state)
    with torch.no_grad():
        out = model(x, state)
        assert isinstance(out, LMOutput) and out.loss is None
        assert out.logits is not None and out.logits.shape == (3, 6, V)
        again = model.forward(x, state)
        assert again.logits is not None and torch.equal(again.logits, out.logits)
        logits, after_one = model.step(x[:, 0], state)
        assert logits.shape == (3, V)
        torch.testing.assert_close(logits, out.logits[:, 0], atol=1e-5, rtol=1e-5)
        one = model(x[:, :1], state).state
        assert all(torch.allclose(a.double(), b.double(), atol=1e-6) for a, b in zip(after_one, one))
        nll, after = model.token_nll(x, state, y)
        want = F.cross_entropy(out.logits.float().reshape(-1, V), y.reshape(-1), reduction="none").view(3, 6)
        torch.testing.assert_close(nll.float(), want, atol=1e-4, rtol=1e-4)
        assert all(torch.equal(a, b) for a, b in zip(after, out.state))
        warm = model.warm_state(x)
        fresh = model(x).state
        assert all(torch.allclose(a.double(), b.double(), atol=1e-6) for a, b in zip(warm, fresh))


def test_a_recurrent_model_is_built_only_from_its_own_options() -> None:
    from charlm.errors import ConfigError

    kn = build("kn")
    with pytest.raises(ConfigError, match="Kneser-Ney 3-gram"):
        RNNLanguageModel.from_config(kn.config)
    with pytest.raises(ConfigError, match="unknown model kind"):
        config_from_dict("transformer", {})
