"""Logit filters and the choice of a token: pure functions of tensors, each returning a new tensor.

logits -> mask banned ids (<unk>) -> history filters (charlm.sampling.history: penalties, no-repeat n-gram,
min_new_tokens) -> temperature -> top-k -> top-p -> min-p -> typical-p -> softmax -> draw
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from charlm.errors import ConfigError
from charlm.sampling.options import DecodingOptions
from charlm.sampling.rng import RowRandom


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T: T < 1 sharpens, T > 1 flattens. T must be > 0 (T -> 0 is greedy)."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0 here, got {temperature}; use greedy decoding for 0")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th), set the rest to -inf."""
    if k < 1:
        raise ConfigError(f"top-k must be at least 1, got {k}")
    if k >= logits.size(-1):
        return logits.clone()
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most probable tokens whose probability reaches p.

    A token is dropped when the tokens ranked above it already hold >= p, so the
    most probable token always stays.
    """
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"top-p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits.clone()
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
    probs = sorted_logits.float().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (..., V)
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
) -> torch.Tensor:
    """The sampling distribution's logits: temperature, then top-k, top-p, min-p, typical-p (each on the
    tempered distribution); a filter left at None costs nothing."""
    out = apply_temperature(logits, temperature) if temperature != 1.0 else logits
    if top_k is not None:
        out = top_k_filter(out, top_k)
    if top_p is not None:
        out = top_p_filter(out, top_p)
    if min_p is not None:
        out = min_p_filter(out, min_p)
    if typical_p is not None:
        out = typical_p_filter(out, typical_p)
    return out if out is not logits else logits.clone()


def ban(logits: torch.Tensor, banned: Sequence[int]) -> torch.Tensor:
    """Logits with the `banned` ids set to -inf (never chosen), as a new tensor; `logits` itself when none."""
    if not banned:
        return logits
    out = logits.clone()
    out[..., list(banned)] = float("-inf")
    return out


def greedy_next(logits: torch.Tensor) -> torch.Tensor:
    """logits (B, V) -> the most likely id of each row (B,); ties go to the lowest id."""
    return logits.argmax(dim=-1)


def sample_next(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """logits (B, V), already filtered, and one uniform in [0, 1) per row (B,) -> one id per row (B,).

    The inverse of each row's cumulative distribution at its u (`charlm.sampling.rng`): a row's id depends
    only on its own logits and u, never on the other rows of the batch. An id of probability 0 is never drawn.
    """
    probs = logits.float().softmax(dim=-1)  # (B, V)
    cdf = probs.double().cumsum(dim=-1)  # (B, V)
    target = u.to(cdf.device, torch.float64)[:, None] * cdf[:, -1:]  # (B, 1), below each row's total
    return (cdf <= target).sum(dim=-1).clamp_(max=logits.size(-1) - 1)  # first index whose cdf passes target


def choose(
    logits: torch.Tensor,
    options: DecodingOptions,
    rng: RowRandom | None,
    banned: Sequence[int] = (),
    adjust: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding decision: logits (B, V) -> ids (B,) and their log-probability under the model (B,).

    `rng` gives each row its uniform when sampling (greedy decoding draws nothing).
    `adjust` (the history filters, or None when all are off) runs after the ban, before temperature.
    The log-probability is the model's own, before banning and filtering.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, V)
    allowed = ban(logits.float(), banned)
    if adjust is not None:
        allowed = adjust(allowed)
    if options.effective_strategy == "greedy":
        ids = greedy_next(allowed)
    else:
        o = options
        if rng is None:
            raise ConfigError("sampling needs random streams (a seed); use greedy decoding or give a seed")
        ids = sample_next(filter_logits(allowed, o.temperature, o.top_k, o.top_p, o.min_p, o.typical_p), rng.next())
    return ids, logp.gather(1, ids[:, None]).squeeze(1)  # (B,), (B,)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep the tokens whose probability is at least min_p times the most likely one's (the top always stays)."""
    probs = logits.float().softmax(dim=-1)  # (..., V)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values  # (..., 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


def typical_p_filter(logits: torch.Tensor, mass: float) -> torch.Tensor:
    """Locally typical sampling (Meister et al.), as Hugging Face does it: rank tokens by how far their
    surprisal -log p is from the entropy, keep the closest ones until they hold `mass` (at least one)."""
    logp = logits.float().log_softmax(dim=-1)  # (..., V)
    p = logp.exp()
    entropy = -(logp.nan_to_num() * p).sum(-1, keepdim=True)  # (..., 1)
    distance = (-logp - entropy).abs()  # (..., V)
    sorted_dist, order = distance.sort(dim=-1)
    cum = p.gather(-1, order).cumsum(dim=-1)  # (..., V)
    last = (cum < mass).sum(dim=-1, keepdim=True).clamp(max=logits.size(-1) - 1)  # (..., 1)
    drop_sorted = sorted_dist > sorted_dist.gather(-1, last)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
