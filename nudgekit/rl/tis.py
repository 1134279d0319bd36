"""Truncated importance sampling (TIS) for rollouts sampled by another engine than the trainer.

vLLM's kernels give slightly different probabilities than the trainer's forward for the same
weights, so the rollouts come from a policy `q` a little off the trainer's `p_old`. TIS weights
each token's policy-gradient term by `min(p_old / q, cap)`, computed from the trainer's old
log-probs and the engine's sampled ones (vLLM `processed_logprobs`: after the temperature, as
the trainer takes them). The weight is a constant (no gradient) and does not touch the KL term.
"""

from __future__ import annotations

import torch


def tis_weights(
    old_logprobs: torch.Tensor,  # [N, L] trainer log-probs before the update
    sample_logprobs: torch.Tensor,  # [N, L] engine log-probs at sampling time
    mask: torch.Tensor,  # [N, L] 1 for completion tokens that count
    cap: float,
) -> torch.Tensor:
    """Per-token `min(exp(old - sampled), cap)`, 0 where `mask` is 0; detached.

    Raises:
        ValueError: `cap` is not positive.
    """
    if not cap > 0:
        raise ValueError(f"tis_cap must be > 0, got {cap}")
    diff = (old_logprobs.detach() - sample_logprobs.to(old_logprobs.dtype)) * mask
    return torch.exp(diff).clamp(max=cap) * mask.to(old_logprobs.dtype)


def tis_stats(weights: torch.Tensor, mask: torch.Tensor, cap: float) -> dict[str, torch.Tensor]:
    """Mean weight and the share of tokens the cap truncated (masked)."""
    m = mask.to(weights.dtype)
    count = m.sum().clamp(min=1.0)
    return {
        "tis/weight": (weights * m).sum() / count,
        "tis/clip_frac": ((weights >= cap).to(m.dtype) * m).sum() / count,
    }
