"""GRPO core: pure advantage/loss math, rollout containers, the recipe-shaped trainer with its
hook points (and the narrow contexts hooks see) and grouped settings, backends (plain torch,
DeepSpeed ZeRO 1/2/3), atomic checkpoints with resume, and a plateau detector."""

from nudgekit.rl.advantages import frac_reward_zero_std, group_advantages, per_group_stats
from nudgekit.rl.backends import DeepSpeedBackend, TorchBackend
from nudgekit.rl.checkpoint import CheckpointManager, export_hf
from nudgekit.rl.hooks import RolloutContext, RolloutHook, ScheduleContext, TrainerHook
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
from nudgekit.rl.plateau import PlateauDetector
from nudgekit.rl.rollouts import Rollout, RolloutBatch, collate, token_logprobs
from nudgekit.rl.sampler import PromptSampler
from nudgekit.rl.settings import Checkpoint, Sampling, Update, Validation
from nudgekit.rl.trainer import GRPOTrainer

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "ClippedPolicyLoss",
    "DeepSpeedBackend",
    "GRPOTrainer",
    "PlateauDetector",
    "PromptSampler",
    "Rollout",
    "RolloutBatch",
    "RolloutContext",
    "RolloutHook",
    "Sampling",
    "ScheduleContext",
    "SeqMeanTokenMean",
    "SeqMeanTokenSumNorm",
    "TokenMean",
    "TorchBackend",
    "TrainerHook",
    "Update",
    "Validation",
    "clipped_surrogate",
    "collate",
    "entropy_from_logits",
    "export_hf",
    "frac_reward_zero_std",
    "group_advantages",
    "k3_kl",
    "per_group_stats",
    "policy_stats",
    "token_logprobs",
]
