"""The linear-chain CRF against brute-force enumeration of every tag sequence (masks, constraints), and its
gradients against finite differences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from charlm.tagging import CRF, constraints

TAGS = ["O", "B-X", "I-X", "B-Y", "I-Y"]


def make_crf(num_tags: int, constrained: bool, seed: int = 0) -> CRF:
    torch.manual_seed(seed)
    cons = constraints(TAGS[:num_tags], "bio") if constrained else None
    crf = CRF(num_tags, *(cons or ())).double()
    with torch.no_grad():
        for p in (crf.transitions, crf.start, crf.end):
            p.normal_()
    return crf


def brute_scores(crf: CRF, emissions: torch.Tensor, n: int) -> dict[tuple[int, ...], float]:
    """The score of every tag sequence of length n, from the definition (penalties included)."""
    trans, start, end = crf._scores(torch.float64)
    out = {}
    for seq in itertools.product(range(crf.num_tags), repeat=n):
        s = start[seq[0]] + end[seq[-1]] + sum(emissions[t, seq[t]] for t in range(n))
        s = s + sum(trans[seq[t - 1], seq[t]] for t in range(1, n))
        out[seq] = float(s.detach())
    return out


def batch(lengths: list[int], num_tags: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(len(lengths), max(lengths), num_tags, generator=g, dtype=torch.float64)
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return emissions, mask


@pytest.mark.parametrize("num_tags,constrained", [(2, False), (3, False), (5, False), (3, True), (5, True)])
def test_log_partition_viterbi_and_marginals_equal_enumeration(num_tags: int, constrained: bool) -> None:
    crf = make_crf(num_tags, constrained)
    lengths = [4, 1, 3, 2]
    emissions, mask = batch(lengths, num_tags)
    log_z = crf.log_partition(emissions, mask)
    best, best_score = crf.viterbi(emissions, mask)
    marginals = crf.marginals(emissions, mask)
    for b, n in enumerate(lengths):
        scores = brute_scores(crf, emissions[b], n)
        values = torch.tensor(list(scores.values()), dtype=torch.float64)
        assert math.isclose(float(log_z[b].detach()), float(torch.logsumexp(values, 0)), rel_tol=1e-9)
        top = max(scores, key=scores.__getitem__)
        assert tuple(best[b, :n].tolist()) == top
        assert (best[b, n:] == 0).all()
        assert math.isclose(float(best_score[b].detach()), scores[top], rel_tol=1e-9)
        # marginals: each position's probabilities sum to 1 and equal the enumeration's
        probs = torch.softmax(values, 0)
        expect = torch.zeros(n, num_tags, dtype=torch.float64)
        for p, seq in zip(probs, scores):
            expect[torch.arange(n), torch.tensor(seq)] += p
        assert torch.allclose(marginals[b, :n], expect, atol=1e-9)
        assert torch.allclose(marginals[b, :n].sum(1), torch.ones(n, dtype=torch.float64))
        assert (marginals[b, n:] == 0).all()
        # the likelihood of a sequence is its enumeration probability
        seq = torch.tensor(top).unsqueeze(0)
        tags = torch.zeros(1, emissions.size(1), dtype=torch.long)
        tags[0, :n] = seq
        nll = crf.nll(emissions[b : b + 1], tags, mask[b : b + 1])
        assert math.isclose(float(nll.detach()), -math.log(float(probs[list(scores).index(top)])), rel_tol=1e-7)


def test_constraints_keep_viterbi_on_allowed_paths() -> None:
    """Emissions that favour I-X at the start and after O decode to a valid BIO sequence under constraints."""
    emissions = torch.tensor([[[0.0, 0.0, 5.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    free, _ = CRF(3).double().viterbi(emissions, mask)
    assert free.tolist() == [[2, 0, 2]]  # I-X O I-X: the emissions' argmax, invalid BIO
    tags, _ = CRF(3, *constraints(TAGS[:3], "bio")).double().viterbi(emissions, mask)
    assert tags.tolist() == [[0, 1, 2]]  # O B-X I-X (score 5): the best sequence BIO allows


def test_gradients_match_finite_differences() -> None:
    crf = make_crf(3, constrained=True)
    emissions, mask = batch([3, 2, 1], 3)
    emissions.requires_grad_(True)
    tags = torch.tensor([[1, 2, 0], [0, 1, 0], [2, 0, 0]])

    # the parameters through the module: check d nll / d params with autograd against finite differences
    assert torch.autograd.gradcheck(lambda e: crf.nll(e, tags, mask), (emissions,))
    assert torch.autograd.gradcheck(lambda e: crf.log_partition(e, mask), (emissions,))
    params = [crf.transitions, crf.start, crf.end]
    loss = crf.nll(emissions, tags, mask).sum()
    grads = torch.autograd.grad(loss, params)
    eps = 1e-6
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            with torch.no_grad():
                flat[i] = old + eps
                up = float(crf.nll(emissions, tags, mask).sum())
                flat[i] = old - eps
                down = float(crf.nll(emissions, tags, mask).sum())
            flat[i] = old
            assert math.isclose(float(g.view(-1)[i]), (up - down) / (2 * eps), abs_tol=1e-5)
