"""The regularisers, one unit each: masks, identity in eval, rescaling in expectation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from charlm.models.dropout import drop_weight, embed, embedding_dropout, locked_dropout, seq_dropout
from charlm.models.rnn import CELLS, ModelConfig, RNNLanguageModel


def test_locked_dropout_uses_one_mask_per_sequence_across_time():
    torch.manual_seed(0)
    x = torch.rand(4, 9, 16) + 0.5  # (B, T, D), no zeros of its own
    p = 0.4
    y = locked_dropout(x, p, training=True)
    zero = y == 0
    # Each (b, d) column is all-zero or all-kept over t.
    assert torch.equal(zero, zero[:, :1, :].expand_as(zero))
    torch.testing.assert_close(y[~zero], x[~zero] / (1 - p))  # kept entries scaled by 1/(1-p)
    dropped = zero[:, 0, :].float().mean()
    assert 0.0 < dropped < 1.0


def test_ordinary_dropout_varies_over_time_unlike_locked():
    torch.manual_seed(0)
    x = torch.ones(4, 9, 16)
    y = seq_dropout(x, 0.5, training=True, locked=False)
    assert not torch.equal(y, y[:, :1, :].expand_as(y))
    z = seq_dropout(x, 0.5, training=True, locked=True)
    assert torch.equal(z, z[:, :1, :].expand_as(z))


@pytest.mark.parametrize("fn", [locked_dropout, embedding_dropout, drop_weight])
def test_identity_in_eval_and_at_p_zero(fn):
    x = torch.randn(3, 4, 5) if fn is locked_dropout else torch.randn(6, 5)
    assert torch.equal(fn(x, 0.5, False), x)
    assert torch.equal(fn(x, 0.0, True), x)


def test_embedding_dropout_drops_whole_rows():
    torch.manual_seed(0)
    w = torch.rand(50, 8) + 0.5  # (V, E)
    p = 0.3
    out = embedding_dropout(w, p, training=True)
    assert out.shape == w.shape
    zero_rows = (out == 0).all(dim=1)
    assert zero_rows.any() and not zero_rows.all()
    # A row is either entirely zero or entirely scaled by 1/(1-p).
    assert not (out[~zero_rows] == 0).any()
    torch.testing.assert_close(out[~zero_rows], w[~zero_rows] / (1 - p))


def test_drop_weight_zeroes_single_entries():
    torch.manual_seed(0)
    w = torch.rand(40, 40) + 0.5
    out = drop_weight(w, 0.5, training=True)
    zeros = out == 0
    # Entry-wise: some rows are partly dropped (not whole rows as in embedding dropout).
    partial = zeros.any(1) & ~zeros.all(1)
    assert partial.any()
    torch.testing.assert_close(out[~zeros], w[~zeros] * 2)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_all_rescale_to_the_same_expectation(p):
    """Mean over many masks stays 1 (loose statistical check with a fixed seed)."""
    torch.manual_seed(1234)
    ones = torch.ones(64, 8, 64)
    locked = locked_dropout(ones, p, True)
    assert locked.mean().item() == pytest.approx(1.0, abs=0.05)
    assert (locked[:, 0] == 0).float().mean().item() == pytest.approx(p, abs=0.05)
    emb = embedding_dropout(torch.ones(4000, 4), p, True)
    assert emb.mean().item() == pytest.approx(1.0, abs=0.05)
    assert (emb[:, 0] == 0).float().mean().item() == pytest.approx(p, abs=0.05)
    w = drop_weight(torch.ones(100, 100), p, True)
    assert w.mean().item() == pytest.approx(1.0, abs=0.05)


def _model(cell: str, **kw) -> RNNLanguageModel:
    torch.manual_seed(0)
    return RNNLanguageModel(ModelConfig(vocab_size=9, cell=cell, num_layers=2, hidden_size=8, emb_size=4, **kw))


@pytest.mark.parametrize("cell", CELLS)
def test_weight_drop_changes_training_outputs_not_eval_outputs(cell):
    dropped = _model(cell, weight_drop=0.5)
    plain = _model(cell)
    plain.load_state_dict(dropped.state_dict())
    ids = torch.randint(0, 9, (3, 6))
    w_before = dropped.layers[0].weight_hh_l0.detach().clone()
    dropped.train()
    plain.train()
    a = dropped(ids).logits
    b = dropped(ids).logits
    ref = plain(ids).logits
    assert not torch.allclose(a, ref)  # the dropped weights are used...
    assert not torch.allclose(a, b)  # ...with a new mask on every call
    # The parameter itself is untouched and still receives a gradient.
    assert torch.equal(dropped.layers[0].weight_hh_l0, w_before)
    a.sum().backward()
    assert dropped.layers[0].weight_hh_l0.grad is not None
    assert dropped.layers[0].weight_hh_l0.grad.abs().sum() > 0
    dropped.eval()
    plain.eval()
    c = dropped(ids).logits
    d = plain(ids).logits
    torch.testing.assert_close(c, d)


def test_embedding_dropout_in_the_model_drops_whole_types():
    """With dropout_embed, every occurrence of a dropped token type gets the zero vector."""
    model = _model("lstm", dropout_embed=0.5)
    captured = {}

    def hook(module, args, output):
        captured.setdefault("x", args[0])

    model.layers[0].register_forward_hook(hook)
    ids = torch.tensor([[1, 2, 1, 2, 1, 3, 3, 1]] * 4)
    torch.manual_seed(3)
    model.train()
    model(ids)
    x = captured["x"]  # (B, T, E) fed to the first layer
    zero = (x == 0).all(-1)  # (B, T)
    for tok in (1, 2, 3):
        col = zero[ids == tok]
        assert col.all() or not col.any()  # one decision per type, shared by all positions


def test_embed_equals_lookup_of_the_dropped_matrix_with_the_same_draws():
    """`embed` gathers the row mask at the ids: the same output as dropping rows of the
    whole matrix first, from the same random stream, and the same (dense) gradient."""
    w = torch.randn(50, 6, requires_grad=True)
    ids = torch.randint(0, 50, (3, 7))
    torch.manual_seed(5)
    ref = F.embedding(ids, embedding_dropout(w, 0.3, True))
    torch.manual_seed(5)
    out = embed(ids, w, 0.3, True)
    assert torch.equal(out, ref)
    assert (out == 0).all(-1).any()  # some types were dropped
    g_ref = torch.autograd.grad((ref * torch.arange(6.0)).sum(), w)[0]
    g = torch.autograd.grad((out * torch.arange(6.0)).sum(), w)[0]
    assert torch.allclose(g, g_ref)


def test_sparse_lookup_gradient_adds_into_the_tied_decoders_dense_one():
    """With sparse_grad the lookup's gradient is sparse, but a weight that is also the
    decoder ends up with one dense gradient equal to the dense lookup's."""
    grads = []
    for sparse in (False, True):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(30, 4))
        ids = torch.randint(0, 30, (2, 5))
        x = embed(ids, w, 0.2, True, sparse_grad=sparse)  # (2, 5, 4)
        loss = F.cross_entropy((x @ w.t()).reshape(-1, 30), ids.roll(1).reshape(-1))
        loss.backward()
        assert w.grad is not None and not w.grad.is_sparse
        grads.append(w.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
