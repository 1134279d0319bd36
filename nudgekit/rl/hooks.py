"""The GRPO trainer's named hook points, and the narrow context a rollout hook sees.

`TrainerHook` has a no-op method per hook point; a hook overrides the ones it needs. The
trainer calls them, in the order of its `hooks` (the schedule first), at:

- `on_train_start(trainer)`: after setup (and any resume), before the first step;
- `on_step_start(trainer)`: before each step samples its prompts;
- `on_rollouts(ctx)`: between `score` and `compute_advantages`; returns the rollouts to train
  on, and sees only a `RolloutContext`;
- `on_step_end(trainer, metrics)`: after the update, may add to the step's metrics;
- `state_dict()` / `load_state_dict(state, path)`: JSON-able state saved in every checkpoint
  (`extra_state` in `trainer_state.json`) and restored on resume; `checkpoint_files()`: files
  saved beside it; `before_resume(trainer, state)`: after the run-config check, before loading;
- `final_metrics()`: added to the run's final metrics; `run_config()`: settings recorded in each
  checkpoint and checked on resume (`{dotted key: value}`).

A schedule (`pipeline.schedule`) is a hook that may also set the run length (`end_step`) and
whether a plateau ends the run (`stops_on_plateau`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.rl.rollouts import Rollout

Regenerate = Callable[[Sequence[tuple[int, Problem]], Callable[[Problem], str], int], list[Rollout]]


@dataclass
class RolloutContext:
    """What a rollout hook may see and do during one step.

    Attributes:
        rollouts: this process's scored rollouts of the step, G per group.
        step: the step being taken (the trainer's step count before it).
        group_size: G.
        regenerate: `(pairs, hint, n) -> rollouts`: sample `n` completions per `(group id,
            problem)` from prompts rendered with `hint(problem)`, scored, with seeds apart from
            the step's first draw. Every process must call it (ZeRO-3 gathers collectively).
        problem: a training problem by id.
        prompt_tokens: `(problem, hint) -> int`, the rendered prompt's length in tokens.
    """

    rollouts: list[Rollout]
    step: int
    group_size: int
    regenerate: Regenerate
    problem: Callable[[str], Problem]
    prompt_tokens: Callable[[Problem, str | None], int]


class TrainerHook:
    """A no-op at every hook point; subclasses override what they need."""

    def on_train_start(self, trainer: Any) -> None:
        """After setup and any resume, before the first step."""

    def on_step_start(self, trainer: Any) -> None:
        """Before each step samples its prompts."""

    def on_rollouts(self, ctx: RolloutContext) -> list[Rollout]:
        """Between scoring and advantages; must keep how many rollouts this process holds."""
        return ctx.rollouts

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        """After the update; may add to `metrics`."""

    def end_step(self, trainer: Any, end: int) -> int:
        """The step at which training ends (`end`: the trainer's `max_steps`)."""
        return end

    def stops_on_plateau(self, stop: bool) -> bool:
        """Whether a plateau ends the run (`stop`: the trainer's `stop_on_plateau`)."""
        return stop

    def state_dict(self) -> dict[str, Any]:
        return {}

    def before_resume(self, trainer: Any, state: dict[str, Any]) -> None:
        """After the run-config check, before any state loads (`state`: the trainer state)."""

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """Restore from the checkpoint's `extra_state` (`path`: the checkpoint directory)."""

    def checkpoint_files(self) -> dict[str, Callable[[Path], Any]]:
        return {}

    def run_config(self) -> dict[str, Any]:
        return {}

    def final_metrics(self) -> dict[str, float]:
        return {}


REGEN_SALT = 1  # seeds of regenerated rollouts differ from the step's first draw


def rollout_context(trainer: Any, rollouts: list[Rollout]) -> RolloutContext:
    """The `RolloutContext` of `trainer`'s current step over `rollouts`."""
    by_id: dict[str, Problem] = {}

    def problem(problem_id: str) -> Problem:
        if not by_id:
            by_id.update((p.id, p) for p in trainer.train_problems)
        return by_id[problem_id]

    def regenerate(
        pairs: Sequence[tuple[int, Problem]], hint: Callable[[Problem], str], n: int
    ) -> list[Rollout]:
        out = trainer.generate_rollouts(pairs, hint=hint, n=n, salt=REGEN_SALT)
        trainer.score(out)
        return out

    def prompt_tokens(p: Problem, hint: str | None) -> int:
        text = trainer.prompt(p, hint)
        return len(trainer.tokenizer(text, add_special_tokens=False).input_ids)

    return RolloutContext(
        rollouts, trainer.step, trainer.group_size, regenerate, problem, prompt_tokens
    )


class RolloutHook(TrainerHook):
    """A `TrainerHook` from a function `(ctx) -> rollouts` (e.g. a bare `HintInjector`)."""

    def __init__(self, fn: Callable[[RolloutContext], list[Rollout]]) -> None:
        self.fn = fn

    def on_rollouts(self, ctx: RolloutContext) -> list[Rollout]:
        return self.fn(ctx)
