"""The GRPO trainer's grouped settings: one small dataclass per config node.

`pipeline.sampling`, `pipeline.update`, `pipeline.validation` and `pipeline.checkpoint` each carry
a `_target_` naming the dataclass here, so Hydra builds them and `dry_run` binds their keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nudgekit.errors import NudgekitError

ADVANTAGE_SCALES = ("group", "batch", "none")


def at_least_one(**sizes: int) -> None:
    """Refuse a count below 1 in one line naming it."""
    for name, value in sizes.items():
        if int(value) < 1:
            raise NudgekitError(f"grpo: {name} must be >= 1, got {value}")


@dataclass
class Sampling:
    """How rollouts are sampled.

    Args:
        group_size: G, samples per prompt.
        max_new_tokens, temperature, top_p, stop: the sampling of each completion.
    """

    group_size: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    stop: Sequence[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        at_least_one(group_size=self.group_size)
        self.stop = [str(s) for s in (self.stop or ())]


@dataclass
class Update:
    """How each step's rollouts update the policy.

    Args:
        ppo_epochs: μ, passes over each step's rollouts.
        mini_batches: optimizer steps per epoch (the rollouts split in this many parts).
        micro_batch_size: rows per forward/backward (gradient accumulation below a mini-batch).
        advantage_scale: "group" (GRPO), "batch" or "none" (Dr. GRPO).
        mask_truncated: drop completions that hit `max_new_tokens` from the loss.
        share_prompt: run each distinct prompt of a micro-batch once and share its keys/values
            across the rows that use it (same loss and gradients; see `logprobs`).
        sort_by_length: cut micro-batches from rollouts ordered by completion length when that
            pads fewer tokens (`rollouts.by_length`; same loss and gradients).
        gradient_checkpointing: recompute each decoder layer's activations in backward instead
            of keeping them (`precision`); the gradient pass then does not share prompts.
        tis_cap: truncated importance-sampling correction for engine/trainer mismatch: weight
            each token's policy loss by `min(exp(old - sampled), tis_cap)` (None: off).
    """

    ppo_epochs: int = 1
    mini_batches: int = 1
    micro_batch_size: int = 32
    advantage_scale: str = "group"
    mask_truncated: bool = False
    share_prompt: bool = True
    sort_by_length: bool = True
    gradient_checkpointing: bool = False
    tis_cap: float | None = None

    def __post_init__(self) -> None:
        at_least_one(
            ppo_epochs=self.ppo_epochs,
            mini_batches=self.mini_batches,
            micro_batch_size=self.micro_batch_size,
        )
        if self.advantage_scale not in ADVANTAGE_SCALES:
            raise NudgekitError(
                f"grpo: advantage_scale {self.advantage_scale!r} is not group|batch|none"
            )


@dataclass
class Validation:
    """Validation pass@1 during training.

    Args:
        every: validate every this many steps (and at the start and the end; 0: never).
        n: samples per validation problem.
        temperature: validation sampling temperature.
        table_rows: sample completions logged per validation.
    """

    every: int = 10
    n: int = 4
    temperature: float = 1.0
    table_rows: int = 8


@dataclass
class Checkpoint:
    """Checkpoint cadence, retention, format and place.

    Args:
        every: checkpoint every this many steps (0: only at the end).
        keep: keep the newest k checkpoints (None: all).
        weights_only: checkpoints hold only the policy as a plain HF model in `step-N/model/`
            (for export and evaluation); they cannot be resumed.
        dir: where checkpoints go (None: `<run_dir>/checkpoints`).
    """

    every: int = 0
    keep: int | None = 2
    weights_only: bool = False
    dir: str | None = None

    def __post_init__(self) -> None:
        if self.keep is not None and int(self.keep) < 1:
            raise NudgekitError(
                f"grpo: checkpoint.keep must be >= 1 or null (keep all), got {self.keep}"
            )
