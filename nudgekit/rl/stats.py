"""Metric bookkeeping for one GRPO step: rollout statistics and update statistics.

Every number is reduced over all ranks, so a metric means the same thing in one process and in
N: token-weighted means for per-token statistics (clip fractions, approx-KL, KL, entropy),
means over optimizer steps for the loss and gradient norm.
"""

from __future__ import annotations

import resource
from typing import Any

import torch

from nudgekit.rl.rollouts import Rollout, RolloutBatch


def rollout_metrics(
    rollouts: list[Rollout],
    rewards: torch.Tensor,  # [N_global]
    group_ids: torch.Tensor,  # [N_global]
    frac_zero_std: float,
    backend: Any,
) -> dict[str, float]:
    """Reward and completion statistics of one step (rewards and ids already gathered)."""
    local = backend.all_reduce_sum(
        [
            sum(len(r.completion_ids) for r in rollouts),
            sum(r.finish_reason == "length" for r in rollouts),
            sum(r.hinted for r in rollouts),
            len(rollouts),
        ]
    )
    n = max(local[3], 1.0)
    return {
        "train/reward": float(rewards.mean()),
        "train/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "train/frac_reward_zero_std": frac_zero_std,
        "train/groups": float(torch.unique(group_ids).numel()),
        "train/completion_len": local[0] / n,
        "train/truncated_frac": local[1] / n,
        "train/hinted_frac": local[2] / n,
    }


class StatSums:
    """Per-rank sums over the micro-batches of one `update`, reduced once at the end."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}

    def _add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    @torch.no_grad()
    def add_micro(
        self,
        batch: RolloutBatch,
        loss: torch.Tensor,
        stats: dict[str, torch.Tensor],
        entropy: torch.Tensor | None,  # [N, L]
        old_logprobs: torch.Tensor,  # [N, L] trainer log-probs before the update
        grad_norm: float | None,
        first_epoch: bool,
    ) -> None:
        mask = batch.completion_mask
        tokens = float(mask.sum())
        self._add("tokens", tokens)
        self._add("loss", loss.detach())
        for key, value in stats.items():
            self._add(f"w/{key}", value * tokens)
        if entropy is not None:
            self._add("entropy", (entropy * mask).sum())
        if first_epoch:
            # how far the engine's sampling log-probs are from the trainer's recomputation
            diff = (batch.sample_logprobs - old_logprobs).abs()
            self._add("lp_diff", (diff * mask).sum())
            self._add("lp_tokens", tokens)
        if grad_norm is not None:
            self._add("grad_norm", grad_norm)
            self._add("opt_steps", 1.0)

    def reduce(self, backend: Any) -> dict[str, float]:
        keys = sorted(self.sums)
        values = dict(zip(keys, backend.all_reduce_sum([self.sums[k] for k in keys])))
        tokens = max(values.get("tokens", 0.0), 1.0)
        world = backend.world_size
        steps = max(values.get("opt_steps", 0.0) / world, 1.0)  # every rank counts each step
        out = {
            "train/loss": values.get("loss", 0.0) / steps,
            "train/grad_norm": values.get("grad_norm", 0.0) / world / steps,
            "train/entropy": values.get("entropy", 0.0) / tokens,
            "train/logprob_abs_diff": values.get("lp_diff", 0.0)
            / max(values.get("lp_tokens", 0), 1),
            "train/optimizer_steps": steps,
        }
        for key in keys:
            if key.startswith("w/"):
                out[f"train/{key[2:]}"] = values[key] / tokens
        return out


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def perf_metrics(
    tokens: float, t0: float, t_gen: float, t_score: float, t_end: float
) -> dict[str, float]:
    """Timings and throughput of one step (`perf/*`), from its completion tokens (all ranks)
    and the times it started, finished generating, finished scoring and ended."""
    return {
        "perf/step_s": t_end - t0,
        "perf/generate_s": t_gen - t0,
        "perf/update_s": t_end - t_score,
        "perf/tokens_per_s": tokens / max(t_end - t0, 1e-9),
        "perf/gen_tokens_per_s": tokens / max(t_gen - t0, 1e-9),
        "perf/peak_rss_mb": peak_rss_mb(),
    }
