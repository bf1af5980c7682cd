"""The adaptive softmax (Grave et al., 2017) of the recurrent model's output layer, and its precision rules.

With `adaptive_cutoffs` the output layer is an adaptive softmax over the same decoder
matrix: a head over the frequent ids [0, c0) plus one vector per tail cluster
[c_i, c_i+1), each tail a softmax of its own. Ids must be frequency-ordered (charlm's
word tokenizer sorts them). Training asks `forward(..., targets=y)` for the loss, which
computes a tail only for the tokens whose target lies in it; `forward` without targets
and `step` return exact normalised log-probabilities over the whole vocabulary, which
are valid logits, so evaluation and sampling need no change. The tails keep the full
decoder width (no per-cluster down-projection) so that a tied decoder ties every word,
the tails included; the saving is the cost of the tails for the ~10-20% of tokens
routed there, measured by benchmarks/bench_word.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Pieces = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]  # a decoder's weight and bias, cut by cluster


def unigram_bias(counts: torch.Tensor, cuts: tuple[int, ...] | None, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output biases that give the unigram distribution of `counts` (V,), add-one smoothed, in float64:
    (every id's bias (V,), each tail cluster's score in the head (K,), empty without cutoffs).

    A full softmax's bias is each id's log-frequency; with an adaptive softmax the head's ids
    get theirs, each cluster's score its total log-frequency and a tail's ids their
    log-frequency within the cluster, so the model starts at the same distribution.
    """
    c = counts.detach().cpu().to(torch.float64) + 1.0  # (V,)
    total = c.sum()
    bias = (c / total).log()
    edges = (0, *(cuts or ()), vocab)
    scores = torch.empty(len(cuts or ()), dtype=torch.float64)
    for k, (lo, hi) in enumerate(zip(edges[1:], edges[2:])):
        mass = c[lo:hi].sum()
        bias[lo:hi] = (c[lo:hi] / mass).log()
        scores[k] = (mass / total).log()
    return bias, scores


def adaptive_log_probs(
    x: torch.Tensor, ws: tuple[torch.Tensor, ...], bs: tuple[torch.Tensor, ...], cw: torch.Tensor, cb: torch.Tensor
) -> torch.Tensor:
    """Exact log-probabilities (..., V) from decoder inputs x (..., D): each tail's log-softmax plus its
    cluster's log-probability in the head (decoder pieces ws, bs; cluster scores' weight cw (K, D), bias cb)."""
    head = ws[0].size(0)
    head_logp = F.log_softmax(wide(head_scores(x, ws[0], bs[0], cw, cb)), dim=-1)  # (..., c0 + K)
    parts = [head_logp[..., :head]]
    for k in range(1, len(ws)):
        tail = F.log_softmax(wide(F.linear(x, ws[k], bs[k])), dim=-1)  # (..., V_k)
        parts.append(tail + head_logp[..., head + k - 1 : head + k])
    return torch.cat(parts, dim=-1)


def cluster_sizes(cuts: tuple[int, ...], vocab: int) -> list[int]:
    """The sizes of the head and of each tail cluster."""
    edges = (0, *cuts, vocab)
    return [b - a for a, b in zip(edges, edges[1:])]


def decoder_pieces(w: torch.Tensor, b: torch.Tensor, cuts: tuple[int, ...] | None, whole: bool = False) -> Pieces:
    """A decoder's weight w (V, D) and bias b (V,) cut at the adaptive cutoffs: (head, tail 1, ...) each; whole
    without cutoffs, or when asked for (`AdaptiveNLL` cuts them itself, a view of the weight then).

    One `split`, not a slice per cluster: its backward assembles one (V, D) gradient,
    where each slice's would allocate and add a (V, D) tensor of its own (measured 2x
    slower for the whole output layer at V = 13.8k, D = 650).

    Training cuts them before the embedding lookup: autograd then runs the
    split's backward after the lookup's, the tied weight's sparse lookup gradient
    arrives first, and the dense one is added to it in place. Cut after the lookup,
    the dense one arrives first and autograd adds the sparse one out of place, a
    copy of the (V, D) gradient every step (12 ms of a 2x650 word model's ~290 ms
    step at V = 13.8k; benchmarks/bench_word.py).
    """
    if whole and cuts is not None:  # a view: its backward, too, runs after the lookup's
        return (w.view_as(w),), (b,)
    if cuts is None:  # a split into one piece would only add a copy to the backward
        return (w,), (b,)
    sizes = cluster_sizes(cuts, w.size(0))
    return w.split(sizes), b.split(sizes)


def head_scores(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, cw: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """An adaptive head's scores: the frequent ids' (decoder rows w, b), then one per cluster (cw, cb)."""
    return torch.cat([F.linear(x, w, b), F.linear(x, cw, cb)], dim=-1)  # (..., c0 + K)


def hand_backward(x: torch.Tensor) -> bool:
    """Whether an adaptive softmax's NLL of x takes `AdaptiveNLL` (training on a CPU) rather than autograd's
    backward (no gradient wanted, or a GPU, where autocast runs the output layer in half precision)."""
    return x.device.type == "cpu" and torch.is_grad_enabled()


def adaptive_nll(
    x: torch.Tensor,
    ws: tuple[torch.Tensor, ...],
    bs: tuple[torch.Tensor, ...],
    cw: torch.Tensor,
    cb: torch.Tensor,
    targets: torch.Tensor,
    cuts: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """An adaptive softmax's NLL of `targets` (N,) given decoder inputs x (N, D), fp32 (N,), from the
    decoder's pieces ws, bs (head, tail 1, ...) and the cluster scores' weight cw (K, D) and bias cb (K,).

    Also what a backward needs: the head's log-probabilities (N, c0 + K), each target's
    column in the head (N,), and by tail k = 1, 2, ... that any target falls in: its rows
    (n_k,), log-probabilities (n_k, V_k) and the targets' columns in it (n_k, 1).
    """
    head = cuts[0]
    head_logp = F.log_softmax(wide(head_scores(x, ws[0], bs[0], cw, cb)), dim=-1)  # (N, c0 + K)
    cluster = torch.bucketize(targets, torch.tensor(cuts, device=targets.device), right=True)  # (N,) 0 = head
    in_head = torch.where(cluster == 0, targets, head + cluster - 1)  # the head's column for each target
    nll = -head_logp.gather(1, in_head[:, None]).squeeze(1)  # (N,)
    tails = {}
    for k, lo in enumerate(cuts, start=1):
        rows = torch.nonzero(cluster == k).squeeze(1)  # (n_k,)
        if rows.numel() == 0:
            continue
        logp = F.log_softmax(wide(F.linear(x.index_select(0, rows), ws[k], bs[k])), dim=-1)  # (n_k, V_k)
        inside = (targets.index_select(0, rows) - lo)[:, None]  # (n_k, 1)
        nll = nll.index_add(0, rows, -logp.gather(1, inside).squeeze(1))
        tails[k] = (rows, logp, inside)
    return nll, head_logp, in_head, tails


class AdaptiveNLL(torch.autograd.Function):
    """An adaptive softmax's NLL (N,) from the whole decoder weight (V, D), with a hand-written backward.

    Autograd's backward of the decoder cut into pieces assembles the (V, D) gradient by
    concatenating one gradient per piece: an extra pass over V x D floats every step
    (~7 ms of a 2x650 word model's ~300 ms step at V = 13.8k on a 2-core CPU;
    benchmarks/results_word.md). This backward writes each piece's matrix product straight
    into its rows of one gradient, and zeros the rows of a cluster no target fell in.
    The forward is `adaptive_nll`, the function autograd differentiates elsewhere.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, cw, cb, targets, cuts):
        sizes = cluster_sizes(cuts, weight.size(0))
        ws, bs = weight.split(sizes), bias.split(sizes)
        nll, head_logp, in_head, tails = adaptive_nll(x, ws, bs, cw, cb, targets, cuts)
        ctx.cuts, ctx.present = cuts, list(tails)
        ctx.save_for_backward(x, weight, cw, head_logp, in_head, *(t for tail in tails.values() for t in tail))
        return nll

    @staticmethod
    def backward(ctx, grad):
        x, weight, cw, head_logp, in_head, *saved = ctx.saved_tensors
        cuts, head = ctx.cuts, ctx.cuts[0]
        edges = (*cuts, weight.size(0))
        grad = grad.to(head_logp.dtype)[:, None]  # (N, 1)
        dweight, dbias = torch.empty_like(weight), weight.new_empty(weight.size(0))

        def scores_grad(logp: torch.Tensor, picked: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            """d nll / d scores, times the incoming gradient: (softmax - one-hot) x g."""
            return logp.exp().mul_(g).scatter_add_(1, picked, -g)

        gh = scores_grad(head_logp, in_head[:, None], grad)  # (N, c0 + K)
        torch.mm(gh[:, :head].t(), x, out=dweight[:head])
        torch.sum(gh[:, :head], 0, out=dbias[:head])
        dx = torch.mm(gh[:, :head], weight[:head]).addmm_(gh[:, head:], cw)  # (N, D)
        tails = dict(zip(ctx.present, (saved[i : i + 3] for i in range(0, len(saved), 3))))
        for k, (lo, hi) in enumerate(zip(edges, edges[1:]), start=1):
            if k not in tails:  # no target in this cluster: its rows get no gradient
                dweight[lo:hi].zero_()
                dbias[lo:hi].zero_()
                continue
            rows, logp, inside = tails[k]
            g = scores_grad(logp, inside, grad.index_select(0, rows))  # (n_k, V_k)
            torch.mm(g.t(), x.index_select(0, rows), out=dweight[lo:hi])
            torch.sum(g, 0, out=dbias[lo:hi])
            dx.index_add_(0, rows, torch.mm(g, weight[lo:hi]))
        return dx, dweight, dbias, torch.mm(gh[:, head:].t(), x), gh[:, head:].sum(0), None, None


def cpu_autocast(x: torch.Tensor) -> bool:
    """Whether x is on a CPU under bf16 autocast, where the output layer is kept in fp32.

    The output layer's matmuls have the vocabulary (or a cluster) as a long inner
    dimension in the backward; oneDNN's bf16 kernels for those shapes measured slower
    than fp32 on an AMX Xeon (a 2x650 word model's step: 508 ms against 379 ms in fp32,
    with the LSTM alone in bf16 334 ms), and the weight would be cast to bf16 every step.
    On a GPU autocast keeps the tensor cores for them.
    """
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def wide(scores: torch.Tensor) -> torch.Tensor:
    """Scores in at least fp32 for a softmax (autocast's bf16/fp16 widened, fp64 kept)."""
    return scores if scores.dtype == torch.float64 else scores.float()
