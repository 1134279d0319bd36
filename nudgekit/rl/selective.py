"""Per-token log-probs and entropies over the vocabulary without a full fp32 `[N, L, V]` tensor.

The plain way, `log_softmax(logits.float() / T).gather(ids)`, makes an fp32 copy of the logits,
a scaled copy and the fp32 log-softmax (which autograd keeps for backward), and the entropy adds
two more: at Qwen scale (4 x 3072 tokens, V = 151,936) each is ~7.5 GB. Here the log-prob of a
token is `x[token] - logsumexp(x)` with `x = logits / T` (the "selective log-softmax"), computed
a block of positions at a time: only one block is upcast to fp32, and the backward pass keeps
the logits in their own dtype plus one fp32 log-normaliser per position, recomputing each block's
softmax when the gradient arrives (a custom autograd function). Values and gradients are the same
function as the plain path, up to fp32 rounding (`tests/test_rl_memory.py`).

The logits themselves (model dtype) still exist once; fusing the LM head into the blocks would
remove that too, but needs the model's internals and is not done here.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

# fp32 elements of one block (64 MiB): ~110 positions at V = 151,936, 512 at V = 32,768
BLOCK_ELEMENTS = 1 << 24

Block = tuple[slice, slice]


def blocks(rows: int, length: int, positions: int) -> Iterator[Block]:
    """`(row slice, column slice)` pairs covering `[rows, length]` with <= `positions` each.

    Long rows are cut along the columns; short rows are taken several at a time.

    Args:
        rows: N.
        length: L.
        positions: the most positions (N x L cells) per block (>= 1).

    Returns:
        An iterator of index pairs, in order.
    """
    positions = max(int(positions), 1)
    if length >= positions or length == 0:
        for r in range(rows):
            for c in range(0, max(length, 1), positions):
                yield slice(r, r + 1), slice(c, c + positions)
        return
    per = positions // length
    for r in range(0, rows, per):
        yield slice(r, r + per), slice(None)


def _log_softmax_block(
    logits: torch.Tensor, temperature: float, norm: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(log_softmax(logits / T) [n, l, V], logsumexp [n, l])` of one block, in fp32.

    Works in place on one fresh fp32 copy of the block; `norm` (the saved logsumexp) skips
    recomputing it in the backward pass. T = 0 or 1 leaves the logits unscaled.
    """
    x = logits.to(torch.float32, copy=True)
    if temperature not in (0.0, 1.0):
        x.div_(temperature)
    if norm is None:
        norm = torch.logsumexp(x, dim=-1)
    return x.sub_(norm.unsqueeze(-1)), norm


class _SelectiveLogSoftmax(torch.autograd.Function):
    """`(log p(ids) [N, L], entropy [N, L] or empty)`; differentiable in the log-probs only."""

    @staticmethod
    def forward(ctx, logits, ids, temperature, positions, want_entropy):
        rows, length, _ = logits.shape
        lp = torch.empty((rows, length), dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(lp)
        ent = torch.empty_like(lp) if want_entropy else lp.new_empty(0)
        for r, c in blocks(rows, length, positions):
            logp, lse[r, c] = _log_softmax_block(logits[r, c], temperature)  # [n, l, V] fp32
            lp[r, c] = logp.gather(-1, ids[r, c].unsqueeze(-1)).squeeze(-1)
            if want_entropy:
                ent[r, c] = -logp.exp().mul_(logp).sum(-1)
        ctx.save_for_backward(logits, ids, lse)
        ctx.temperature, ctx.positions = temperature, positions
        ctx.mark_non_differentiable(ent)
        return lp, ent

    @staticmethod
    def backward(ctx, grad_lp, _grad_ent):
        logits, ids, lse = ctx.saved_tensors
        if grad_lp is None or not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        t = ctx.temperature
        scale = 1.0 / t if t not in (0.0, 1.0) else 1.0
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        rows, length, _ = logits.shape
        for r, c in blocks(rows, length, ctx.positions):
            logp, _ = _log_softmax_block(logits[r, c], t, lse[r, c])
            g = grad_lp[r, c].float().unsqueeze(-1)  # [n, l, 1]
            # d(x[id] - lse)/dx = onehot(id) - softmax(x); then through x = logits / T
            gx = logp.exp_().mul_(-g).scatter_add_(-1, ids[r, c].unsqueeze(-1), g)
            grad[r, c] = (gx.mul_(scale) if scale != 1.0 else gx).to(logits.dtype)
        return grad, None, None, None, None


def positions_per_block(vocab: int, elements: int = BLOCK_ELEMENTS) -> int:
    """How many positions fit one block of `elements` fp32 values at vocabulary size `vocab`."""
    return max(elements // max(vocab, 1), 1)


def selective_logprobs(
    logits: torch.Tensor,  # [N, L, V] any float dtype
    ids: torch.Tensor,  # [N, L]
    temperature: float = 1.0,
    entropy: bool = False,
    block_elements: int = BLOCK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of `ids` under `softmax(logits / T)` (and the entropy), one block at a time.

    Args:
        logits: the logits that predict each token.
        ids: the tokens.
        temperature: the sampling temperature (0 and 1 leave the logits as they are).
        entropy: also return the per-position entropy (detached; for logging).
        block_elements: fp32 elements upcast at once (sets the block size).

    Returns:
        `(logprobs [N, L] fp32, entropy [N, L] fp32 or None)`; gradients flow to `logits`
        through the log-probs only.
    """
    positions = positions_per_block(logits.shape[-1], block_elements)
    lp, ent = _SelectiveLogSoftmax.apply(logits, ids, float(temperature), positions, entropy)
    return lp, (ent if entropy else None)


@torch.no_grad()
def chunked_entropy(logits: torch.Tensor, block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """Entropy of `softmax(logits)` over the last dim, `[..., V] -> [...]` fp32, in blocks."""
    shape, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(1, -1, vocab)  # [1, T, V]
    ids = torch.zeros(flat.shape[:2], dtype=torch.long, device=logits.device)
    _, ent = selective_logprobs(flat, ids, 1.0, True, block_elements)
    return ent.reshape(shape)
