"""What a GRPO checkpoint holds beside the weights, and how a resume restores it.

The trainer state (`trainer_state.json`) holds the sampler and plateau detector, the metric
history, the hooks' state (`extra_state`) and the run config (`run_config`: the trainer's
settings and the hooks'); the hooks' files lie beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nudgekit.rl import runconfig

log = logging.getLogger(__name__)


def run_config(trainer: Any) -> dict[str, Any]:
    """The settings that define `trainer`'s run: its own (`runconfig.grpo_config`) and each
    hook's `run_config()` (recorded in checkpoints, checked on resume)."""
    out = runconfig.grpo_config(trainer)
    for hook in trainer.hooks:
        out.update(hook.run_config())
    return out


def extra_state(trainer: Any) -> dict[str, Any]:
    """The hooks' JSON-able state, saved as `extra_state` in every checkpoint."""
    return {k: v for hook in trainer.hooks for k, v in hook.state_dict().items()}


def save(trainer: Any) -> Path:
    """Write an atomic checkpoint of `trainer` at its current step; returns its directory."""
    state = {
        "sampler": trainer.sampler.state_dict(),
        "plateau": trainer.plateau.state_dict() if trainer.plateau is not None else None,
        "history": trainer.history,
        "extra_state": trainer.extra_state(),
        "config": trainer.run_config(),
    }
    files = {k: v for hook in trainer.hooks for k, v in hook.checkpoint_files().items()}
    path = trainer.checkpoints.save(trainer.step, trainer.backend, state, files, trainer.tokenizer)
    trainer._saved_step = trainer.step
    log.info("grpo: checkpoint %s", path)
    return path


def load(trainer: Any, path: Path) -> None:
    """Resume `trainer` from a verified checkpoint: check the run config, load, apply allowed
    changes, hand the hooks their state.

    Raises:
        NudgekitError: a run-config key differs and `resume_allow` does not cover it.
    """
    recorded = trainer.checkpoints.read_state(path)
    allowed = runconfig.check_resume(
        recorded.get("config"), trainer.run_config(), trainer.resume_allow, path
    )
    for hook in trainer.hooks:
        hook.before_resume(trainer.context, recorded)
    state = trainer.checkpoints.load(path, trainer.backend)
    hparams = runconfig.optimizer_overrides(allowed)
    if hparams:  # loading the optimizer state restored the checkpoint's values
        trainer.backend.set_hparams(hparams)
    trainer.step = trainer._saved_step = int(state["step"])
    trainer.sampler.load_state_dict(state["sampler"])
    if trainer.plateau is not None and state.get("plateau"):
        trainer.plateau.load_state_dict(state["plateau"])
    trainer.history = dict(state.get("history") or {})
    extra = dict(state.get("extra_state") or {})
    for hook in trainer.hooks:
        hook.load_state_dict(extra, Path(path))
    log.info("grpo: resumed from %s at step %d", path, trainer.step)
