"""The GRPO trainer's named hook points, and the narrow contexts hooks see.

`TrainerHook` has a no-op method per hook point; a hook overrides the ones it needs. The
trainer calls them, in the order of its `hooks` (the schedule first), at:

- `on_train_start(ctx)`: after setup (and any resume), before the first step;
- `on_step_start(ctx)`: before each step samples its prompts;
- `on_rollouts(rctx)`: between `score` and `compute_advantages`; returns the rollouts to train
  on, and sees only a `RolloutContext`;
- `on_step_end(ctx, metrics)`: after the update, may add to the step's metrics;
- `state_dict()` / `load_state_dict(state, path)`: JSON-able state saved in every checkpoint
  (`extra_state` in `trainer_state.json`) and restored on resume; `checkpoint_files()`: files
  saved beside it; `before_resume(ctx, state)`: after the run-config check, before loading;
- `final_metrics()`: added to the run's final metrics; `run_config()`: settings recorded in each
  checkpoint and checked on resume (`{dotted key: value}`).

A schedule (`pipeline.schedule`) is a hook that may also set the run length (`end_step`) and
whether a plateau ends the run (`stops_on_plateau`). Outside the rollout hook point a hook sees
the trainer only through its `ScheduleContext` (`ctx`): the step, the ranks, the run dir, the
tracker, the generation handles, the training problems and plateau state, and three actions
(`record`, `use_problems`, `save_checkpoint`); never the model, optimizer, backend or sampler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.rl.rollout_engine import generating
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


class ScheduleContext:
    """What a schedule (any `TrainerHook`) may read and do, outside the rollout hook point.

    A live view of one trainer (values are read when asked: `step` is always the current step);
    the trainer builds one (`GRPOTrainer.context`) and passes it to every hook point but
    `on_rollouts`. Nothing else of the trainer is reachable through it: not the model, the
    optimizer, the backend, the sampler or the metric history.

    Read:
        step: the trainer's step count (steps done).
        rank, world_size, is_main: this process among the ranks.
        run_dir: the run directory (the same path on every rank).
        engine, prompt, verifier, tokenizer: the generation handles (the rollout engine over
            the live policy, the chat prompt, the verifier, the policy's tokenizer).
        sampling: the `Sampling` settings node (G, max_new_tokens, temperature, top_p, stop).
        seed: the run's seed.
        train_problems: the whole training set as given to the trainer (a copy).
        plateaued: whether the trainer's plateau detector has fired (False without one).

    Do:
        log(metrics), log_table(name, rows): to the run's tracker at the current step (nothing
            without a tracker, e.g. before `train`).
        record(metrics): summary metrics, kept in the run's final metrics and in every
            checkpoint's history.
        generating(): the context the engine generates in (ZeRO-3: parameters gathered; every
            rank must enter it).
        all_reduce_sum(values), all_gather_object(obj): collectives over the ranks.
        use_problems(problems, start_epoch=None): train on `problems` from the next step on.
        save_checkpoint(): write a checkpoint at the current step.
    """

    __slots__ = ("_trainer",)

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer

    @property
    def step(self) -> int:
        return int(self._trainer.step)

    @property
    def rank(self) -> int:
        return self._trainer.backend.rank

    @property
    def world_size(self) -> int:
        return self._trainer.backend.world_size

    @property
    def is_main(self) -> bool:
        return self._trainer.backend.is_main

    @property
    def run_dir(self) -> Path:
        return self._trainer.run_dir

    @property
    def engine(self) -> Any:
        return self._trainer.engine

    @property
    def prompt(self) -> Callable[..., str]:
        return self._trainer.prompt

    @property
    def verifier(self) -> Callable[[str, str], float]:
        return self._trainer.verifier

    @property
    def tokenizer(self) -> Any:
        return self._trainer.tokenizer

    @property
    def sampling(self) -> Any:
        return self._trainer.sampling

    @property
    def seed(self) -> int:
        return self._trainer.seed

    @property
    def train_problems(self) -> list[Problem]:
        return list(self._trainer.train_problems)

    @property
    def plateaued(self) -> bool:
        plateau = self._trainer.plateau
        return plateau is not None and bool(plateau.plateaued)

    def log(self, metrics: dict[str, float]) -> None:
        tracker = self._trainer.tracker
        if tracker is not None:
            tracker.log(metrics, step=self.step)

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        tracker = self._trainer.tracker
        if tracker is not None:
            tracker.log_table(name, rows, step=self.step)

    def record(self, metrics: dict[str, float]) -> None:
        self._trainer.history.update(metrics)

    def generating(self) -> contextlib.AbstractContextManager:
        return generating(self._trainer.engine, self._trainer.backend)

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        return self._trainer.backend.all_reduce_sum(values)

    def all_gather_object(self, obj: Any) -> list[Any]:
        return self._trainer.backend.all_gather_object(obj)

    def use_problems(self, problems: Sequence[Problem], start_epoch: int | None = None) -> None:
        """Replace the training set the steps' prompts are drawn from (`GRPOTrainer.use_problems`).

        Args:
            problems: training problems (of `train_problems`; non-empty).
            start_epoch: the new order's first epoch number (None: the one after the epoch in
                progress, a fresh permutation). A resume then restores the checkpoint's position.
        """
        self._trainer.use_problems(problems, start_epoch=start_epoch)

    def save_checkpoint(self) -> Path:
        return self._trainer.save_checkpoint()


class TrainerHook:
    """A no-op at every hook point; subclasses override what they need."""

    def on_train_start(self, ctx: ScheduleContext) -> None:
        """After setup and any resume, before the first step."""

    def on_step_start(self, ctx: ScheduleContext) -> None:
        """Before each step samples its prompts."""

    def on_rollouts(self, ctx: RolloutContext) -> list[Rollout]:
        """Between scoring and advantages; must keep how many rollouts this process holds."""
        return ctx.rollouts

    def on_step_end(self, ctx: ScheduleContext, metrics: dict[str, float]) -> None:
        """After the update; may add to `metrics`."""

    def end_step(self, ctx: ScheduleContext, end: int) -> int:
        """The step at which training ends (`end`: the trainer's `max_steps`)."""
        return end

    def stops_on_plateau(self, stop: bool) -> bool:
        """Whether a plateau ends the run (`stop`: the trainer's `stop_on_plateau`)."""
        return stop

    def state_dict(self) -> dict[str, Any]:
        return {}

    def before_resume(self, ctx: ScheduleContext, state: dict[str, Any]) -> None:
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
