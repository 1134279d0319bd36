"""The clipped GRPO policy loss, its aggregation variants and its diagnostics.

The loss is `ClippedPolicyLoss`; how per-token terms become one scalar is a separate small
module chosen by `_target_` (`TokenMean`, `SeqMeanTokenMean`, `SeqMeanTokenSumNorm`), so a config
swaps aggregation without string switches. Every aggregation accepts the *global* count of its
unit (tokens or sequences in the whole optimiser step), so gradient accumulation over micro-batches
gives the same gradient as one big batch.
"""

from __future__ import annotations

import torch
from torch import nn

from nudgekit.rl.selective import chunked_entropy


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference): exp(r - p) - (r - p) - 1 >= 0."""
    diff = ref_logprobs - logprobs
    return torch.exp(diff) - diff - 1.0


def clipped_surrogate(
    logprobs: torch.Tensor,  # [B, T]
    old_logprobs: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B]
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-style clipped per-token loss `-min(r A, clip(r, 1-eps_low, 1+eps_high) A)`.

    Returns:
        `(per_token_loss [B, T], ratio [B, T])`.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high) * adv
    return -torch.min(unclipped, clipped), ratio


class TokenMean(nn.Module):
    """Sum over all tokens / number of tokens (DAPO's token-level mean; nudgekit's default)."""

    def forward(self, per_token, mask, global_tokens=None, global_seqs=None):
        denom = mask.sum() if global_tokens is None else torch.as_tensor(float(global_tokens))
        return (per_token * mask).sum() / denom.clamp(min=1.0)


class SeqMeanTokenMean(nn.Module):
    """Mean over tokens within a sequence, then mean over sequences (the original GRPO)."""

    def forward(self, per_token, mask, global_tokens=None, global_seqs=None):
        seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        denom = per_token.shape[0] if global_seqs is None else global_seqs
        return seq.sum() / max(float(denom), 1.0)


class SeqMeanTokenSumNorm(nn.Module):
    """Token sum / (sequences x a constant length) (Dr. GRPO: no length bias).

    Args:
        max_len: the constant, normally the completion budget (`max_new_tokens`).
    """

    def __init__(self, max_len: int):
        super().__init__()
        self.max_len = max_len

    def forward(self, per_token, mask, global_tokens=None, global_seqs=None):
        denom = per_token.shape[0] if global_seqs is None else global_seqs
        return (per_token * mask).sum() / (max(float(denom), 1.0) * self.max_len)


class ClippedPolicyLoss(nn.Module):
    """GRPO's clipped policy-gradient loss with an optional k3 KL penalty.

    Args:
        epsilon_low: lower clip range (ratio >= 1 - epsilon_low).
        epsilon_high: upper clip range (ratio <= 1 + epsilon_high; DAPO's clip-higher when larger).
        beta: KL coefficient; 0 means no reference model is needed.
        aggregation: how per-token terms become a scalar (default `TokenMean`).
    """

    def __init__(
        self,
        epsilon_low: float = 0.2,
        epsilon_high: float = 0.2,
        beta: float = 0.0,
        aggregation: nn.Module | None = None,
    ):
        super().__init__()
        self.epsilon_low, self.epsilon_high, self.beta = epsilon_low, epsilon_high, beta
        self.aggregation = aggregation if aggregation is not None else TokenMean()

    def forward(
        self,
        logprobs: torch.Tensor,  # [B, T] current policy
        old_logprobs: torch.Tensor,  # [B, T] policy that sampled (or the last update's)
        advantages: torch.Tensor,  # [B]
        mask: torch.Tensor,  # [B, T] 1 for completion tokens that count
        ref_logprobs: torch.Tensor | None = None,  # [B, T] reference policy, needed iff beta > 0
        global_tokens: int | None = None,
        global_seqs: int | None = None,
        token_weights: torch.Tensor | None = None,  # [B, T] constant per-token weights (TIS)
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns `(loss, stats)`; stats are detached scalars (see `policy_stats`).
        `token_weights` scale the policy term only (not the KL)."""
        mask = mask.to(logprobs.dtype)
        per_token, ratio = clipped_surrogate(
            logprobs, old_logprobs, advantages, self.epsilon_low, self.epsilon_high
        )
        if token_weights is not None:
            per_token = per_token * token_weights.detach()
        kl = None
        if self.beta != 0.0:
            if ref_logprobs is None:
                raise ValueError("beta > 0 needs ref_logprobs")
            kl = k3_kl(logprobs, ref_logprobs)
            per_token = per_token + self.beta * kl
        loss = self.aggregation(per_token, mask, global_tokens, global_seqs)
        stats = policy_stats(
            ratio, advantages, mask, self.epsilon_low, self.epsilon_high, logprobs, old_logprobs, kl
        )
        return loss, stats


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


@torch.no_grad()
def policy_stats(
    ratio: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B]
    mask: torch.Tensor,  # [B, T]
    epsilon_low: float,
    epsilon_high: float,
    logprobs: torch.Tensor,  # [B, T]
    old_logprobs: torch.Tensor,  # [B, T]
    kl: torch.Tensor | None = None,  # [B, T]
) -> dict[str, torch.Tensor]:
    """Clip fractions (tokens whose gradient the clip removed), approx-KL to the old policy, KL."""
    adv = advantages.unsqueeze(-1)
    low = ((ratio < 1 - epsilon_low) & (adv < 0)).to(mask.dtype)
    high = ((ratio > 1 + epsilon_high) & (adv > 0)).to(mask.dtype)
    log_ratio = logprobs - old_logprobs
    stats = {
        "clip_frac/low": masked_mean(low, mask),
        "clip_frac/high": masked_mean(high, mask),
        "clip_frac/region": masked_mean(torch.maximum(low, high), mask),
        # Schulman's unbiased low-variance estimator of KL(old || new)
        "approx_kl": masked_mean(torch.exp(log_ratio) - 1 - log_ratio, mask),
    }
    if kl is not None:
        stats["kl"] = masked_mean(kl, mask)
    return stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits): `[..., V] -> [...]` (fp32, in blocks, detached)."""
    return chunked_entropy(logits)
