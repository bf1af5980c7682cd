"""The recurrent LM: gradients, carried state, step == forward, state ops, init loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from charlm.errors import ConfigError
from charlm.models import CELLS, ModelConfig, RNNLanguageModel, detach_state, reorder_state


def tiny(cell: str = "lstm", dtype: torch.dtype = torch.float32, seed: int = 0, **kw) -> RNNLanguageModel:
    torch.manual_seed(seed)
    opts = dict(vocab_size=7, cell=cell, num_layers=2, hidden_size=5, emb_size=3) | kw
    return RNNLanguageModel(ModelConfig(**opts)).to(dtype)


def random_state(model: RNNLanguageModel, batch: int, dtype=torch.float32):
    return tuple(0.5 * torch.randn_like(s) for s in model.init_state(batch, dtype=dtype))


# ---------------------------------------------------------------- config
def test_config_rejects_bad_options_with_config_error():
    with pytest.raises(ConfigError, match="cell"):
        ModelConfig(vocab_size=5, cell="transformer")
    with pytest.raises(ConfigError, match="hidden-size"):
        ModelConfig(vocab_size=5, hidden_size=0)
    with pytest.raises(ConfigError, match="dropout"):
        ModelConfig(vocab_size=5, dropout=1.0)
    with pytest.raises(ConfigError, match="weight-drop"):
        ModelConfig(vocab_size=5, weight_drop=-0.1)


def test_config_round_trips_and_refuses_unknown_keys():
    c = ModelConfig(vocab_size=11, cell="gru", tie_weights=True, dropout=0.25)
    assert ModelConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown model options"):
        ModelConfig.from_dict(c.to_dict() | {"heads": 4})


@pytest.mark.parametrize("hidden,emb", [(6, 6), (6, 4)])
def test_weight_tying_shares_the_matrix_and_projects_when_sizes_differ(hidden, emb):
    m = tiny(tie_weights=True, hidden_size=hidden, emb_size=emb)
    assert m.decoder.weight is m.embedding.weight
    assert (m.projection is None) == (hidden == emb)
    logits = m(torch.randint(0, 7, (2, 3))).logits
    assert logits.shape == (2, 3, 7)
    untied = tiny(tie_weights=False, hidden_size=hidden, emb_size=emb)
    assert untied.decoder.weight is not untied.embedding.weight and untied.projection is None


# ---------------------------------------------------------------- gradients
def _loss_fn(model: RNNLanguageModel, ids: torch.Tensor, targets: torch.Tensor, names: list[str]):
    n = len(names)

    def f(*inputs):
        params = dict(zip(names, inputs[:n]))
        state = tuple(inputs[n:])
        fwd = functional_call(model, params, (ids, state))  # (B, T, V)
        logits, new_state = fwd.logits, fwd.state
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        # Include the final state so the gradient through it is checked too.
        return loss + 0.1 * sum(s.sum() for s in new_state)

    return f


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tie", [False, True])
def test_gradcheck_float64(cell, tie):
    """Analytic gradients of loss w.r.t. every parameter and the initial state equal finite differences."""
    model = tiny(cell, torch.float64, tie_weights=tie, hidden_size=4, emb_size=3)  # tie -> projection 4 -> 3
    model.eval()
    assert (model.projection is not None) == tie
    torch.manual_seed(1)
    ids = torch.randint(0, 7, (2, 3))
    targets = torch.randint(0, 7, (2, 3))
    named = dict(model.named_parameters())  # tied weight appears once, as embedding.weight
    names = list(named)
    params = [named[k].detach().clone().requires_grad_(True) for k in names]
    state = [s.requires_grad_(True) for s in random_state(model, 2, torch.float64)]
    assert torch.autograd.gradcheck(_loss_fn(model, ids, targets, names), (*params, *state), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_tied_gradient_is_the_sum_of_embedding_and_decoder_uses(cell):
    """With tying, the shared matrix gets gradient from both its uses (decoder and embedding)."""
    model = tiny(cell, torch.float64, tie_weights=True, hidden_size=4, emb_size=3)
    ids = torch.randint(0, 7, (2, 4))
    logits = model(ids).logits
    logits.pow(2).sum().backward()
    g_tied = model.embedding.weight.grad.clone()
    # Same computation with the two uses as separate leaves.
    emb = model.embedding.weight.detach().clone().requires_grad_(True)
    dec = model.embedding.weight.detach().clone().requires_grad_(True)
    params = {"embedding.weight": emb, "decoder.weight": dec}
    out = functional_call(model, params, (ids,), tie_weights=False).logits
    out.pow(2).sum().backward()
    torch.testing.assert_close(g_tied, emb.grad + dec.grad)
    assert dec.grad.abs().sum() > 0 and emb.grad.abs().sum() > 0


# ---------------------------------------------------------------- a naive reference
def _naive_cell(cell: str, layer: torch.nn.Module, x: torch.Tensor, state: tuple[torch.Tensor, ...]):
    """The textbook equations, one time step, in PyTorch's gate order."""
    w_ih, w_hh, b_ih, b_hh = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0
    h = state[0]
    if cell == "lstm":
        c = state[1]
        i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)
    if cell == "gru":
        xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, -1)
        hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        return h, (h,)
    h = torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
    return h, (h,)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tie", [False, True])
def test_forward_equals_a_naive_python_loop(cell, tie):
    model = tiny(cell, torch.float64, tie_weights=tie).eval()
    ids = torch.randint(0, 7, (3, 6))
    state0 = random_state(model, 3, torch.float64)
    fwd = model(ids, state0)
    logits, state = fwd.logits, fwd.state
    with torch.no_grad():
        layer_states = [tuple(s[i] for s in state0) for i in range(model.config.num_layers)]
        outs = []
        for t in range(ids.size(1)):
            x = model.embedding.weight[ids[:, t]]
            for i, layer in enumerate(model.layers):
                x, layer_states[i] = _naive_cell(cell, layer, x, layer_states[i])
            if model.projection is not None:
                x = x @ model.projection.weight.T
            outs.append(x @ model.decoder.weight.T + model.decoder.bias)
    torch.testing.assert_close(logits, torch.stack(outs, 1))
    for k, s in enumerate(state):
        torch.testing.assert_close(s, torch.stack([ls[k] for ls in layer_states]))


# ---------------------------------------------------------------- carried state
@pytest.mark.parametrize("cell", CELLS)
def test_chunked_forward_with_carried_state_equals_full_forward(cell):
    model = tiny(cell).eval()
    ids = torch.randint(0, 7, (3, 10))
    fwd = model(ids)
    full, full_state = fwd.logits, fwd.state
    state, parts = None, []
    for a, b in [(0, 3), (3, 4), (4, 10)]:
        fwd = model(ids[:, a:b], state)
        logits, state = fwd.logits, fwd.state
        state = detach_state(state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), full)
    for s, f in zip(state, full_state):
        torch.testing.assert_close(s, f)
    # Not carrying the state must change the second chunk's logits (so the test above means something).
    fresh = model(ids[:, 3:4]).logits
    assert not torch.allclose(fresh, full[:, 3:4])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tie", [False, True])
def test_step_equals_forward_one_token_at_a_time(cell, tie):
    model = tiny(cell, tie_weights=tie).eval()
    ids = torch.randint(0, 7, (4, 6))
    fwd = model(ids)
    full, full_state = fwd.logits, fwd.state
    state = None
    for t in range(ids.size(1)):
        logits, state = model.step(ids[:, t], state)
        assert logits.shape == (4, 7)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)
    assert len(state) == model.num_state_tensors
    for s, f in zip(state, full_state):
        assert s.shape == f.shape
        torch.testing.assert_close(s, f, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_detached_state_has_no_graph_and_same_values(cell):
    model = tiny(cell)
    state = model(torch.randint(0, 7, (2, 4))).state
    assert all(s.requires_grad and s.grad_fn is not None for s in state)
    detached = detach_state(state)
    assert len(detached) == len(state)
    for d, s in zip(detached, state):
        assert not d.requires_grad and d.grad_fn is None
        assert torch.equal(d, s)
    # A window started from a detached state back-propagates into this window only.
    logits = model(torch.randint(0, 7, (2, 4)), detached).logits
    logits.sum().backward()
    assert all(d.grad is None for d in detached)


@pytest.mark.parametrize("cell", CELLS)
def test_init_state_shapes(cell):
    model = tiny(cell, num_layers=3, hidden_size=6)
    state = model.init_state(5)
    assert len(state) == (2 if cell == "lstm" else 1) == model.num_state_tensors
    for s in state:
        assert s.shape == (3, 5, 6) and s.dtype == torch.float32 and not s.any()
    assert model.init_state(2, dtype=torch.float64)[0].dtype == torch.float64
    out_state = model(torch.randint(0, 7, (5, 2))).state
    assert [s.shape for s in out_state] == [s.shape for s in state]


@pytest.mark.parametrize("cell", CELLS)
def test_reorder_state_follows_the_index(cell):
    model = tiny(cell).eval()
    ids = torch.randint(0, 7, (3, 4))
    state = model(ids).state
    index = torch.tensor([2, 0, 0, 1])
    reordered = reorder_state(state, index)
    for r, s in zip(reordered, state):
        assert r.shape == (2, 4, 5)
        torch.testing.assert_close(r, s[:, index])
    # Continuing the reordered batch equals continuing the original and reordering the outputs.
    nxt = torch.randint(0, 7, (3, 2))
    a = model(nxt[index], reordered).logits
    b = model(nxt, state).logits
    torch.testing.assert_close(a, b[index])


# ---------------------------------------------------------------- initialisation
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tie", [False, True])
def test_loss_at_initialisation_is_close_to_ln_vocab(cell, tie):
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=65, cell=cell, tie_weights=tie, hidden_size=128))
    ids = torch.randint(0, 65, (4, 32))
    with torch.no_grad():
        logits = model(ids).logits
    loss = F.cross_entropy(logits.reshape(-1, 65), ids.reshape(-1)).item()
    assert abs(loss - math.log(65)) < 0.1  # near the uniform prediction


def test_loss_at_initialisation_with_the_default_model():
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=65))  # the default 2x512 LSTM
    ids = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        logits = model(ids).logits
    loss = F.cross_entropy(logits.reshape(-1, 65), ids.reshape(-1)).item()
    assert abs(loss - math.log(65)) < 0.1


def test_initialisation_is_torchs_except_a_tied_embedding():
    torch.manual_seed(0)
    untied = RNNLanguageModel(ModelConfig(vocab_size=300, hidden_size=64, emb_size=64))
    assert untied.embedding.weight.std().item() == pytest.approx(1.0, abs=0.05)  # N(0, 1): a strong input signal
    bound = 1 / math.sqrt(64)
    for w in (untied.decoder.weight, untied.layers[0].weight_hh_l0, untied.layers[0].bias_ih_l0):
        assert w.abs().max().item() <= bound  # U(+-1/sqrt(fan_in)), forget gate included (no bias of 1)
    tied = RNNLanguageModel(ModelConfig(vocab_size=300, hidden_size=64, emb_size=64, tie_weights=True))
    assert tied.embedding.weight.abs().max().item() <= 0.1 and not tied.decoder.bias.any()


def test_dropout_makes_training_stochastic_and_eval_deterministic():
    model = tiny("lstm", dropout=0.5, dropout_input=0.3)
    ids = torch.randint(0, 7, (2, 5))
    model.train()
    a = model(ids).logits
    b = model(ids).logits
    assert not torch.allclose(a, b)
    model.eval()
    c = model(ids).logits
    d = model(ids).logits
    assert torch.equal(c, d)
