"""Build a small GRPO trainer on a tiny model from the real composed config: shared by the
in-process tests and the torchrun workers (`tests/helpers/rl/*_worker.py`), so both sides run
exactly the same configuration.

`make_trainer` composes `conf/` as `python run.py experiment=grpo_tiny debug=tiny model=local ...`
would (`BASE`, then the tests' `DEFAULTS`), and instantiates `pipeline` the way `nudgekit.cli.run`
does. The tests' flat setting names (`group_size=4`, `val_every=2`, `FLAT`) become value overrides
of their node (`pipeline.sampling.group_size=4`, `pipeline.validation.every=2`); components given
as Python objects (a verifier lambda, hooks, a schedule, a loss, a backend, an engine factory,
problem lists, ...) replace their config node at instantiation.
"""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from nudgekit.rl import (
    GRPOTrainer,
)
from nudgekit.runtime import check_config, find_user_error

from ..config import apply_overrides, compose_cfg, override
from .rewards import char_parity

# the tests' compact spelling of the grouped settings: `flat name -> (node, field)`
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


# GRPOTrainer settings that sit directly under `pipeline` (the rest of its arguments are components)
TOP = (
    "max_steps",
    "prompts_per_step",
    "stop_on_plateau",
    "resume",
    "resume_allow",
    "export",
    "seed",
    "num_threads",
)
# what the tests need from experiment=grpo_tiny (debug=tiny comes with compose_cfg)
BASE = (
    "experiment=grpo_tiny",
    "model=local",
    # random-init models never solve a tiny-world problem: a reward with signal (tests/helpers/rl)
    override("reward.name", f"{char_parity.__module__}:{char_parity.__name__}"),
    # grpo_tiny's KL to the starting policy would load a reference model
    "trainer.loss.beta=0.0",
    "pipeline.train_problems.level=1",
    "pipeline.train_problems.n=8",
    # big enough to move a random-init model in a few steps
    "pipeline.optimizer.lr=3e-3",
    # grpo_tiny stops on a plateau; a test that wants one passes `plateau=PlateauDetector(...)`
    "pipeline.plateau=null",
    # grpo_tiny's 1 would set torch's thread count for the rest of the test process
    "pipeline.num_threads=null",
)
DEFAULTS: dict[str, Any] = dict(
    max_steps=3,
    prompts_per_step=4,
    group_size=4,
    max_new_tokens=8,
    mini_batches=1,
    micro_batch_size=4,
    val_every=0,
    val_n=2,
    export=False,
    resume=None,
)


def config_key(name: str) -> str | None:
    """The pipeline key of a flat test setting (`group_size` -> `pipeline.sampling.group_size`);
    None for a component (`verifier`, `hooks`, ...), which has no command-line spelling."""
    if name in FLAT:
        node, field = FLAT[name]
        return f"pipeline.{node}.{field}"
    return f"pipeline.{name}" if name in TOP else None


def overrides_of(settings: dict[str, Any]) -> list[str]:
    """Hydra overrides from flat test settings: `{"val_every": 2}` -> `pipeline.validation.every=2`."""
    return [override(config_key(name), value) for name, value in settings.items()]


@functools.lru_cache(maxsize=16)
def _composed(model_dir: str, overrides: tuple[str, ...]) -> DictConfig:
    """The composed config (compose is the slow part: ~0.2-0.7 s, so each is composed once)."""
    base = [*BASE, override("model.name_or_path", model_dir), *overrides_of(DEFAULTS)]
    return compose_cfg([*base, *overrides])


def trainer_config(model_dir: str, *overrides: str, **settings: Any) -> DictConfig:
    """The composed run config of `make_trainer(model_dir, *overrides, **settings)`."""
    cfg = copy.deepcopy(_composed(str(model_dir), overrides))
    return apply_overrides(cfg, overrides_of(settings))


def make_trainer(model_dir: str, *overrides: str, **kwargs: Any) -> GRPOTrainer:
    """A GRPO trainer of the composed `experiment=grpo_tiny` config on the model in `model_dir`.

    Args:
        model_dir: the policy (`model=local model.name_or_path=<model_dir>`).
        overrides: further Hydra overrides, composed (`trainer/deepspeed=zero2`,
            `model.dtype=bfloat16`, `pipeline.optimizer.lr=1e-3`).
        kwargs: flat test settings (`FLAT`, `TOP`: applied as overrides of their node) and
            components as Python objects (any other `GRPOTrainer` argument: replaces its node).

    Raises:
        NudgekitError: a setting its node refuses (`group_size=0`), as one line: the user error
            behind Hydra's instantiation error, as `run.py` reports it.
    """
    settings = {k: v for k, v in kwargs.items() if config_key(k) is not None}
    objects = {k: v for k, v in kwargs.items() if config_key(k) is None}
    cfg = trainer_config(model_dir, *overrides, **settings)
    try:
        # as nudgekit.cli.run: check_config(cfg), then instantiate(cfg.pipeline), here with the
        # objects as further constructor arguments (their nodes are not built only to be replaced)
        check_config(cfg)
        with open_dict(cfg.pipeline):
            for name in objects:
                cfg.pipeline.pop(name, None)
        return instantiate(cfg.pipeline, _partial_=True)(**objects)
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None or user_error is exc:
            raise
        raise user_error from None


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


def cli_command(model_dir: Path, ckpt: Path, run: Path, *overrides: str) -> list[str]:
    """`python run.py ...` of a short GRPO run on `model_dir` through the real CLI (the
    char-parity reward, level-1 problems, no validation, export or plateau stop, checkpoints in
    `ckpt`, run dir `run`), then `overrides`; run it from the repo root with PYTHONPATH there."""
    return [
        sys.executable,
        "run.py",
        "experiment=grpo_tiny",
        "debug=tiny",
        "model=local",
        f"model.name_or_path={model_dir}",
        "reward.name=tests.helpers.rl.rewards:char_parity",
        "pipeline.train_problems.level=1",
        "pipeline.validation.every=0",
        "pipeline.prompts_per_step=4",
        "pipeline.num_threads=1",
        "pipeline.export=false",
        "pipeline.plateau=null",
        f"pipeline.checkpoint.dir={ckpt}",
        f"hydra.run.dir={run}",
        *overrides,
    ]
