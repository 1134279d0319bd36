"""Build a small GRPO trainer on a tiny model: shared by the in-process tests and the torchrun
worker (`tests/helpers/rl/train_worker.py`), so both sides run exactly the same configuration."""

from __future__ import annotations

import functools
from typing import Any

import torch

from nudgekit.engines.hf import HFEngine
from nudgekit.models import ChatPrompt, ModelSpec
from nudgekit.rewards import load_verifier
from nudgekit.rl import (
    Checkpoint,
    ClippedPolicyLoss,
    GRPOTrainer,
    Sampling,
    TokenMean,
    Update,
    Validation,
)
from nudgekit.zoo import tiny_problems

from .rewards import char_parity

# the tests' compact spelling of the grouped settings: `flat name -> (node, field)`
NODES = {"sampling": Sampling, "update": Update, "validation": Validation, "checkpoint": Checkpoint}
FLAT = {
    **{
        k: ("sampling", k) for k in ("group_size", "max_new_tokens", "temperature", "top_p", "stop")
    },
    **{
        k: ("update", k)
        for k in (
            "ppo_epochs",
            "mini_batches",
            "micro_batch_size",
            "advantage_scale",
            "mask_truncated",
            "share_prompt",
            "sort_by_length",
            "gradient_checkpointing",
            "tis_cap",
        )
    },
    "val_every": ("validation", "every"),
    "val_n": ("validation", "n"),
    "val_temperature": ("validation", "temperature"),
    "table_rows": ("validation", "table_rows"),
    "save_every": ("checkpoint", "every"),
    "keep_checkpoints": ("checkpoint", "keep"),
    "checkpoint_weights_only": ("checkpoint", "weights_only"),
    "checkpoint_dir": ("checkpoint", "dir"),
}


def grouped(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`GRPOTrainer` arguments from flat test kwargs: flat setting names go into their nodes."""
    out: dict[str, Any] = {}
    fields: dict[str, dict[str, Any]] = {}
    for key, value in kwargs.items():
        if key in FLAT:
            node, name = FLAT[key]
            fields.setdefault(node, {})[name] = value
        else:
            out[key] = value
    for node, values in fields.items():
        out[node] = NODES[node](**values)
    return out


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
    return GRPOTrainer(**grouped(kwargs))


def equivalence_kwargs() -> dict[str, Any]:
    """The run the 1-process vs 2-process comparison uses: 2 mini-batches, accumulation, export."""
    return dict(
        max_steps=2,
        prompts_per_step=4,
        group_size=4,
        mini_batches=2,
        micro_batch_size=2,
        val_every=2,
        export=True,
    )
