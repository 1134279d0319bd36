"""Group-relative advantages (GRPO) as pure functions over explicit group ids.

Rollouts are grouped by an explicit `group_ids` tensor, never by position, so a group may be
re-ordered or mixed (NuRL's 1 un-hinted + G-1 hinted rollouts) without changing the math.
"""

from __future__ import annotations

from typing import Literal

import torch

Scale = Literal["group", "batch", "none"]


def per_group_stats(
    rewards: torch.Tensor,  # [N]
    group_ids: torch.Tensor,  # [N] int64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std (unbiased; 0 for a group of one) and size of every group.

    Returns:
        `(inverse [N], mean [M], std [M], size [M])` for the M distinct groups, where
        `inverse[i]` is the index of rollout i's group.
    """
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    r = rewards.to(torch.float64)
    means = torch.zeros(counts.numel(), dtype=torch.float64).index_add_(0, inverse, r) / counts
    sq = torch.zeros_like(means).index_add_(0, inverse, (r - means[inverse]) ** 2)
    var = torch.where(counts > 1, sq / (counts - 1).clamp(min=1), torch.zeros_like(sq))
    return inverse, means, var.sqrt(), counts


def group_advantages(
    rewards: torch.Tensor,  # [N]
    group_ids: torch.Tensor,  # [N] int64
    scale: Scale = "group",
    eps: float = 1e-4,
) -> torch.Tensor:  # [N]
    """GRPO advantages: reward minus its group's mean, optionally divided by a std.

    Args:
        rewards: one scalar reward per rollout.
        group_ids: the group (prompt) each rollout belongs to.
        scale: "group" divides by the group's std (GRPO), "batch" by the std of all rewards in the
            batch, "none" does not divide (Dr. GRPO).
        eps: added to the std, so an all-equal group gets advantage exactly 0 (never NaN).

    Returns:
        Advantages in the dtype of `rewards`.
    """
    if rewards.shape != group_ids.shape or rewards.dim() != 1:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)} "
            "must be equal 1-D shapes"
        )
    inverse, mean, std, _ = per_group_stats(rewards, group_ids)
    centered = rewards.to(torch.float64) - mean[inverse]
    if scale == "group":
        adv = centered / (std[inverse] + eps)
    elif scale == "batch":
        batch_std = rewards.to(torch.float64).std() if rewards.numel() > 1 else torch.tensor(0.0)
        adv = centered / (batch_std + eps)
    elif scale == "none":
        adv = centered
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return adv.to(rewards.dtype)


def frac_reward_zero_std(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Fraction of groups whose rewards are all equal (no learning signal)."""
    _, _, std, _ = per_group_stats(rewards, group_ids)
    return float((std == 0).double().mean())
