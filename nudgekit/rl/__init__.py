"""GRPO core: pure advantage and loss math (the trainer arrives with the GRPO-core issue)."""

from nudgekit.rl.advantages import frac_reward_zero_std, group_advantages, per_group_stats
from nudgekit.rl.losses import (
    ClippedPolicyLoss,
    SeqMeanTokenMean,
    SeqMeanTokenSumNorm,
    TokenMean,
    clipped_surrogate,
    entropy_from_logits,
    k3_kl,
    policy_stats,
)

__all__ = [
    "ClippedPolicyLoss",
    "SeqMeanTokenMean",
    "SeqMeanTokenSumNorm",
    "TokenMean",
    "clipped_surrogate",
    "entropy_from_logits",
    "frac_reward_zero_std",
    "group_advantages",
    "k3_kl",
    "per_group_stats",
    "policy_stats",
]
