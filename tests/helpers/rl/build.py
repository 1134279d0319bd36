"""Build a small GRPO trainer on a tiny model: shared by the in-process tests and the torchrun
worker (`tests/helpers/rl/train_worker.py`), so both sides run exactly the same configuration."""

from __future__ import annotations

import functools
from typing import Any

import torch

from nudgekit.engines.hf import HFEngine
from nudgekit.models import ChatPrompt, ModelSpec
from nudgekit.rewards import load_verifier
from nudgekit.rl import ClippedPolicyLoss, GRPOTrainer, TokenMean
from nudgekit.zoo import tiny_problems

from .rewards import char_parity


def make_trainer(model_dir: str, **overrides: Any) -> GRPOTrainer:
    spec = ModelSpec(str(model_dir))
    kwargs: dict[str, Any] = dict(
        model=spec,
        train_problems=tiny_problems("train", level=1, n=8),
        val_problems=tiny_problems("val", level=2, n=4),
        verifier=load_verifier(char_parity),
        prompt=ChatPrompt(spec, template="tiny"),
        engine=functools.partial(HFEngine, max_batch_size=64),
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.0),
        loss=ClippedPolicyLoss(epsilon_low=0.2, epsilon_high=0.28, aggregation=TokenMean()),
        max_steps=3,
        prompts_per_step=4,
        group_size=4,
        max_new_tokens=8,
        micro_batch_size=4,
        val_every=0,
        val_n=2,
        export=False,
        resume=None,
        seed=0,
    )
    kwargs.update(overrides)
    return GRPOTrainer(**kwargs)


def equivalence_kwargs() -> dict[str, Any]:
    """The run the 1-process vs 2-process comparison uses: 2 mini-batches, accumulation, export."""
    return dict(
        max_steps=2, prompts_per_step=4, group_size=4, mini_batches=2, micro_batch_size=2,
        val_every=2, export=True,
    )
