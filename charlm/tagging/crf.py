"""A batched linear-chain CRF: log-partition by the forward algorithm, Viterbi, marginals, constraints.

Scores of a tag sequence y over emissions e (B, T, K) of a sentence of length n:

    score(y) = start[y_0] + sum_t e[t, y_t] + sum_{t>0} trans[y_{t-1}, y_t] + end[y_{n-1}]

Sentences are left-aligned in the batch; `mask` (B, T) is True on real tokens (every row has at least
one). The loops run over time steps, each step a tensor operation over the whole batch. A forbidden
transition (an `I-PER` after `O` in BIO) gets a large negative score: its probability is zero in
practice while gradients stay finite, and Viterbi never picks it while an allowed path exists.
"""

from __future__ import annotations

import torch
from torch import nn

FORBIDDEN = -1e4  # added to the score of a transition the constraints forbid


class CRF(nn.Module):
    """Tag-transition scores over K tags, with optional allowed-transition masks."""

    penalty: torch.Tensor  # (K, K): 0 where allowed, FORBIDDEN where not (buffers, rebuilt from the tags)
    start_penalty: torch.Tensor  # (K,)
    end_penalty: torch.Tensor  # (K,)

    def __init__(
        self,
        num_tags: int,
        allowed: torch.Tensor | None = None,  # (K, K) bool: may tag j follow tag i
        allowed_start: torch.Tensor | None = None,  # (K,) bool: may a sentence start with the tag
        allowed_end: torch.Tensor | None = None,  # (K,) bool: may a sentence end with the tag
    ) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        ones = torch.ones(num_tags, dtype=torch.bool)
        a = allowed if allowed is not None else torch.ones(num_tags, num_tags, dtype=torch.bool)
        self.register_buffer("penalty", torch.where(a, 0.0, FORBIDDEN), persistent=False)
        s = allowed_start if allowed_start is not None else ones
        e = allowed_end if allowed_end is not None else ones
        self.register_buffer("start_penalty", torch.where(s, 0.0, FORBIDDEN), persistent=False)
        self.register_buffer("end_penalty", torch.where(e, 0.0, FORBIDDEN), persistent=False)

    def _scores(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transitions (K, K), start (K,), end (K,)) with the constraints' penalties, in `dtype`."""
        trans = (self.transitions + self.penalty).to(dtype)
        return trans, (self.start + self.start_penalty).to(dtype), (self.end + self.end_penalty).to(dtype)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z of each sentence (B,): the log-sum-exp of the scores of every tag sequence."""
        trans, start, end = self._scores(emissions.dtype)
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            # (B, K, 1) + (K, K) + (B, 1, K) -> log-sum-exp over the previous tag -> (B, K)
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t].unsqueeze(1), nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The score of the given tag sequences (B,); tags (B, T) (any value where mask is False)."""
        trans, start, end = self._scores(emissions.dtype)
        tags = tags.masked_fill(~mask, 0)
        m = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        total = start[tags[:, 0]] + (emit * m).sum(1)
        total = total + (trans[tags[:, :-1], tags[:, 1:]] * m[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return total + end[last]

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The negative log-likelihood of each sentence's tags (B,)."""
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The best tag sequence of each sentence (B, T) (0 past its end) and its score (B,)."""
        trans, start, end = self._scores(emissions.dtype)
        B, T, K = emissions.shape
        delta = start + emissions[:, 0]  # (B, K)
        keep = torch.arange(K, device=emissions.device).expand(B, K)
        pointers = []
        for t in range(1, T):
            best, arg = (delta.unsqueeze(2) + trans).max(dim=1)  # (B, K): the best previous tag for each tag
            on = mask[:, t].unsqueeze(1)
            delta = torch.where(on, best + emissions[:, t], delta)
            pointers.append(torch.where(on, arg, keep))  # past the end: each tag points to itself
        final = delta + end
        score, tag = final.max(dim=1)  # (B,)
        path = [tag]
        for arg in reversed(pointers):
            tag = arg.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        tags = torch.stack(path[::-1], dim=1)  # (B, T)
        return tags.masked_fill(~mask, 0), score

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(y_t = k | sentence) (B, T, K), by forward-backward: the gradient of log Z by the emissions."""
        with torch.enable_grad():
            e = emissions.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_partition(e, mask).sum(), e)
        return grad * mask.unsqueeze(2)
