"""What `GRPOTrainer.setup` builds for a run, and what `cleanup` releases.

`setup` decides rank, world size and device once, before anything loads (`cuda:LOCAL_RANK`);
loads the tokenizer, the policy (prepared for gradient checkpointing and shared prompts) and,
when the loss has a KL term, a frozen reference; sizes the gradient accumulation from the step's
shape; hands the policy to the backend; builds the rollout engine over the live module, the
seeded sampler over the training problems and the checkpoint manager; resumes from the
checkpoint `resume` names, if any (`trainer_state.load`); and pushes the policy as loaded (or
resumed) to an engine that keeps its own copy of the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nudgekit.rl import dist, rollout_engine, runconfig
from nudgekit.rl.checkpoint import CheckpointManager
from nudgekit.rl.precision import prepare_policy
from nudgekit.rl.rollouts import pad_id


def setup(trainer: Any, run_dir: str | Path) -> None:
    """Build `trainer`'s process, policy, backend, engine, sampler and checkpoints; maybe resume."""
    if trainer.num_threads:
        torch.set_num_threads(int(trainer.num_threads))
    trainer.process = dist.setup_process(getattr(trainer.model_spec, "device", "auto"))
    spec = dist.on_device(trainer.model_spec, trainer.process.device)
    trainer.tokenizer = spec.load_tokenizer()
    upd = trainer.update_settings
    module = prepare_policy(spec.load_model(), upd.gradient_checkpointing, upd.share_prompt)
    trainer.pad_id = pad_id(trainer.tokenizer)
    trainer.ref_model = None
    if trainer.loss.beta != 0.0:
        trainer.ref_model = spec.load_model().eval().requires_grad_(False)
    trainer.grad_accum = runconfig.grad_accum_steps(
        trainer.prompts_per_step,
        trainer.process.world_size,
        trainer.group_size,
        upd.mini_batches,
        upd.micro_batch_size,
    )
    backend = trainer.backend
    backend.setup(
        module,
        trainer.optimizer_factory,
        trainer.scheduler_factory,
        trainer.grad_accum,
        upd.micro_batch_size,
    )
    trainer.run_dir = Path(backend.broadcast_object(str(run_dir)))
    trainer.engine = rollout_engine.build(trainer.engine_factory, backend.module, trainer.tokenizer)
    trainer.use_problems(trainer.train_problems, start_epoch=0)
    ckpt = trainer.checkpoint
    ckpt_dir = Path(ckpt.dir) if ckpt.dir else trainer.run_dir / "checkpoints"
    trainer.checkpoints = CheckpointManager(
        ckpt_dir, keep=ckpt.keep, weights_only=ckpt.weights_only
    )
    path = trainer.checkpoints.resolve(trainer.resume, backend)
    if path is not None:
        trainer.load_checkpoint(path)
    if trainer.engine.syncs_weights:  # the policy as loaded (or resumed), in the engine's dtype
        trainer.engine.push(backend)


def cleanup(trainer: Any) -> None:
    """Close the backend and the engine; drop the reference model."""
    trainer.backend.close()
    if getattr(trainer, "engine", None) is not None:
        trainer.engine.close()
    trainer.engine = None
    trainer.ref_model = None
