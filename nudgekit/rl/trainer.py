"""`GRPOTrainer`: a recipe-shaped GRPO trainer (setup / train / save_checkpoint / cleanup).

One GRPO step, as named methods (each a thin call into `nudgekit.rl.steps`):

1. `generate_rollouts`: B prompts from a seeded, resumable sampler, rendered by the chat prompt;
   G samples each from the engine, which samples from the *live* policy (`rollout_engine`: the hf
   engine runs on the trainer's module; a colocated vLLM engine takes the trainer's weights after
   every update).
2. `score`: the verifier turns each completion into a reward.
3. `refine_rollouts`: the extension point between scoring and advantages; it runs each hook's
   `on_rollouts` (NuRL's hint injection regenerates rollouts here). Identity for plain GRPO.
4. `compute_advantages`: group-normalised advantages (`group_advantages`) over explicit group ids.
5. `update`: μ epochs over `mini_batches` optimizer steps, each accumulated over micro-batches;
   log-probs are recomputed by the trainer on the exact prompt + completion ids the engine used;
   then the rollout engine takes the new weights (vLLM: pushed; hf: nothing to do).

Hook points (`hooks.TrainerHook`) and a `schedule` (a hook that may set the run length) let
NuRL's two stages compose with this trainer; hooks see it only through `hooks.ScheduleContext`
and `hooks.RolloutContext`. The settings come in grouped nodes (`settings`). Here is the step
loop; `trainer_setup` builds the run, `trainer_state` is the checkpoint glue, `progress` the
validation, plateau and summary metrics.

Departures from the GRPO paper / TRL worth knowing:

- The loss aggregation defaults to the token mean over the whole optimizer step (DAPO), chosen by
  `_target_` (`TokenMean`, `SeqMeanTokenMean`, `SeqMeanTokenSumNorm`).
- "Old" log-probs come from a trainer forward pass before the update (not from the engine), so
  the ratio is exactly 1 on the first mini-batch; when μ = 1 and there is one mini-batch that
  pass is skipped and the current log-probs (detached) are used, as TRL does. With `tis_cap`
  each token's loss is weighted by `min(exp(old - sampled), tis_cap)` (truncated importance
  sampling over the engine's sampled log-probs; `tis.py`).
- The KL term (β > 0) uses a frozen copy of the starting policy as the reference; with β = 0
  no reference model is loaded.
- Distributed runs split the step's prompts across ranks with a stride, so each optimizer step
  sees the same rollouts whatever the number of processes (see `backends`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nudgekit.data.problem import Problem
from nudgekit.engines.sampling import derive_seed
from nudgekit.rl import progress, steps, trainer_setup, trainer_state
from nudgekit.rl.backends import TorchBackend
from nudgekit.rl.checkpoint import export_hf
from nudgekit.rl.hooks import ScheduleContext, TrainerHook, rollout_context
from nudgekit.rl.losses import ClippedPolicyLoss
from nudgekit.rl.plateau import PlateauDetector
from nudgekit.rl.rollouts import Rollout
from nudgekit.rl.runconfig import check_settings
from nudgekit.rl.sampler import PromptSampler
from nudgekit.rl.settings import Checkpoint, Sampling, Update, Validation
from nudgekit.rl.stats import perf_metrics
from nudgekit.rl.steps import SamplingConfig, UpdateConfig


class GRPOTrainer:
    """GRPO on a problem set with a verifier; `run(tracker, run_dir)` is the pipeline entry.

    Args:
        model: the policy `ModelSpec` (also the reference policy when `loss.beta > 0`).
        train_problems: training problems.
        val_problems: validation problems (None: no validation).
        verifier: `(completion, answer) -> float`.
        prompt: renders a problem (and an optional hint) into prompt text.
        engine: engine factory, called as `engine(model=<live module>, tokenizer=...)`: an
            engine over the live module (hf) or a weight-synced one (`VLLMRollouts`).
        optimizer: optimizer factory, called with the parameters.
        loss: the policy loss module (`ClippedPolicyLoss`).
        lr_scheduler: scheduler factory called with the optimizer (None: constant lr).
        backend: `TorchBackend` (default) or `DeepSpeedBackend`.
        plateau: plateau detector on the metrics it watches (None: none).
        stop_on_plateau: end training when the detector fires (a schedule may decide instead).
        max_steps: GRPO steps (rollout + update rounds); a schedule may set the run length.
        prompts_per_step: B, prompts per step (all ranks together).
        sampling: `Sampling` (G, max_new_tokens, temperature, top_p, stop).
        update: `Update` (ppo_epochs, mini_batches, micro_batch_size, advantage_scale, ...).
        validation: `Validation` (every, n, temperature, table_rows).
        checkpoint: `Checkpoint` (every, keep, weights_only, dir).
        schedule: a `TrainerHook` that may also set the run length and the plateau rule (NuRL's
            two stages: `nudgekit.nurl.NuRLSchedule`); None: `max_steps` steps.
        hooks: more `TrainerHook`s, called after the schedule at every hook point.
        resume: "auto" (newest checkpoint that verifies, if any), a checkpoint path, or None.
        resume_allow: run-config keys that may differ from the checkpoint's on resume (e.g.
            `["optimizer.lr"]`; a prefix like `optimizer` or a last part like `lr` also
            matches); any other changed key is refused. Allowed values take effect, lr included.
        export: write the final policy as a plain HF checkpoint to `<run_dir>/policy`.
        seed: seeds data order and sampling.
        num_threads: torch CPU threads (None: leave as is).
    """

    def __init__(
        self,
        model: Any,
        train_problems: Sequence[Problem],
        verifier: Callable[[str, str], float],
        prompt: Callable[..., str],
        engine: Callable[..., Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: ClippedPolicyLoss | None = None,
        val_problems: Sequence[Problem] | None = None,
        lr_scheduler: Callable[..., Any] | None = None,
        backend: Any = None,
        plateau: PlateauDetector | None = None,
        stop_on_plateau: bool = True,
        max_steps: int = 100,
        prompts_per_step: int = 16,
        sampling: Sampling | None = None,
        update: Update | None = None,
        validation: Validation | None = None,
        checkpoint: Checkpoint | None = None,
        schedule: TrainerHook | None = None,
        hooks: Sequence[TrainerHook] = (),
        resume: str | None = "auto",
        resume_allow: Sequence[str] = (),
        export: bool = True,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        self.sampling = sampling if sampling is not None else Sampling()
        self.update_settings = update if update is not None else Update()
        self.validation = validation if validation is not None else Validation()
        self.checkpoint = checkpoint if checkpoint is not None else Checkpoint()
        check_settings(len(train_problems), max_steps=max_steps, prompts_per_step=prompts_per_step)
        self.model_spec, self.verifier, self.prompt = model, verifier, prompt
        self.train_problems, self.val_problems = list(train_problems), list(val_problems or [])
        self.engine_factory, self.optimizer_factory = engine, optimizer
        self.scheduler_factory = lr_scheduler
        self.loss = loss if loss is not None else ClippedPolicyLoss()
        self.backend = backend if backend is not None else TorchBackend()
        self.plateau, self.stop_on_plateau = plateau, stop_on_plateau
        self.max_steps, self.prompts_per_step = max_steps, prompts_per_step
        self.schedule = schedule
        self.hooks = [h for h in (schedule, *hooks) if h is not None]
        self.resume, self.export = resume, export
        self.resume_allow = [str(k) for k in (resume_allow or ())]
        self.seed, self.num_threads = seed, num_threads
        self.step = 0
        self._saved_step: int | None = None
        self.history: dict[str, float] = {}  # the run's summary metrics (`progress`)
        self.tracker: Any = None
        self.context = ScheduleContext(self)  # all the hooks see of this trainer

    @property
    def group_size(self) -> int:
        return self.sampling.group_size

    # ------------------------------------------------------------------ recipe interface

    def setup(self, run_dir: str | Path) -> None:
        """Load the policy (and reference), build backend, engine, sampler; maybe resume."""
        trainer_setup.setup(self, run_dir)

    def run(self, tracker: Any = None, run_dir: str | Path | None = None) -> dict[str, float]:
        """Pipeline entry: setup, train, export, cleanup; returns the final metrics."""
        self.setup(run_dir if run_dir is not None else Path.cwd())
        try:
            return self.train(tracker)
        finally:
            self.cleanup()

    def train(self, tracker: Any = None) -> dict[str, float]:
        """Run GRPO steps until the schedule's end (or a plateau); validate, log, checkpoint."""
        self.tracker = tracker
        for hook in self.hooks:
            hook.on_train_start(self.context)
        progress.on_start(self, tracker)  # step 0: the initial validation
        start = time.perf_counter()
        while self.step < self.end_step() and not self._stopped:
            metrics = self.train_step()
            progress.on_step(self, tracker, metrics)  # validation, the plateau; logged
            if self.checkpoint.every and self.step % self.checkpoint.every == 0:
                self.save_checkpoint()
        progress.on_end(self, tracker, start)  # a last validation, the training time
        if self._saved_step != self.step:
            self.save_checkpoint()
        if self.export:
            export_hf(self.backend, self.tokenizer, self.run_dir / "policy")
        return self.final_metrics()

    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of everything needed to resume bit-for-bit."""
        return trainer_state.save(self)

    def load_checkpoint(self, path: Path) -> None:
        """Resume from a verified checkpoint (`trainer_state.load`)."""
        trainer_state.load(self, path)

    def run_config(self) -> dict[str, Any]:
        """The settings that define this run (recorded in checkpoints, checked on resume)."""
        return trainer_state.run_config(self)

    def extra_state(self) -> dict[str, Any]:
        """The hooks' JSON-able state, saved as `extra_state` in every checkpoint."""
        return trainer_state.extra_state(self)

    def end_step(self) -> int:
        """The step at which training ends: `max_steps`, or what the schedule decides."""
        end = self.max_steps
        for hook in self.hooks:
            end = hook.end_step(self.context, end)
        return end

    def use_problems(self, problems: Sequence[Problem], start_epoch: int | None = None) -> None:
        """Draw the steps' prompts from `problems` (non-empty) from now on, in a new seeded
        order whose first epoch is `start_epoch` (None: the one after the epoch in progress)."""
        if start_epoch is None:
            start_epoch = self.sampler.epoch + (self.sampler.index > 0)
        self.sampler = PromptSampler(
            problems, self.prompts_per_step, seed=self.seed, start_epoch=start_epoch
        )

    @property
    def _stopped(self) -> bool:
        stop = self.stop_on_plateau
        for hook in self.hooks:
            stop = hook.stops_on_plateau(stop)
        return bool(stop and self.plateau is not None and self.plateau.plateaued)

    def final_metrics(self) -> dict[str, float]:
        """The summary metrics, step count, peak RSS and the hooks' final metrics (`progress`)."""
        return progress.final_metrics(self)

    def cleanup(self) -> None:
        trainer_setup.cleanup(self)

    # ------------------------------------------------------------------ one GRPO step

    def train_step(self) -> dict[str, float]:
        """generate -> score -> refine -> advantages -> update; returns the step's metrics.

        The hooks' `on_step_start` runs first and their `on_step_end` last (with the metrics).
        """
        for hook in self.hooks:
            hook.on_step_start(self.context)
        t0 = time.perf_counter()
        batch = self.sampler.next_batch()
        world, rank = self.backend.world_size, self.backend.rank
        local = [(i, p) for i, p in enumerate(batch) if i % world == rank]
        rollouts = self.generate_rollouts(local)
        t_gen = time.perf_counter()
        self.score(rollouts)
        rollouts = self.refine_rollouts(rollouts)
        metrics = self.compute_advantages(rollouts)
        t_score = time.perf_counter()
        self.engine.before_update()
        metrics.update(self.update(rollouts))
        t_sync = time.perf_counter()
        self.engine.after_update(self.backend)
        t_end = time.perf_counter()
        self.step += 1
        tokens = self.backend.all_reduce_sum([sum(len(r.completion_ids) for r in rollouts)])[0]
        metrics.update(
            {"train/lr": self.backend.lr(), **perf_metrics(tokens, t0, t_gen, t_score, t_end)}
        )
        if self.engine.syncs_weights:
            metrics["perf/weight_sync_s"] = t_end - t_sync
        for hook in self.hooks:
            hook.on_step_end(self.context, metrics)
        return metrics

    def generate_rollouts(
        self,
        problems: Sequence[tuple[int, Problem]],
        hint: Callable[[Problem], str] | None = None,
        n: int | None = None,
        salt: int = 0,
    ) -> list[Rollout]:
        """Sample `n` (default G) completions per `(group id, problem)` in one engine call.

        Args:
            problems: `(group id, problem)` pairs (group id = index in this step's batch).
            hint: optional `problem -> hint text`; hinted prompts give `hinted=True` rollouts.
            n: samples per prompt.
            salt: varies the sampling seeds (a regeneration must not repeat the first draw).
        """
        s = self.sampling
        sampling = SamplingConfig(s.max_new_tokens, s.temperature, s.top_p, s.stop)
        step_seed = derive_seed(derive_seed(self.seed, self.step), salt)
        return steps.generate_rollouts(
            self.engine,
            self.backend,
            self.prompt,
            problems,
            self.group_size if n is None else n,
            sampling,
            step_seed,
            hint,
        )

    def score(self, rollouts: list[Rollout]) -> None:
        """Set every rollout's reward from the verifier (which never raises)."""
        steps.score(rollouts, self.verifier)

    def refine_rollouts(self, rollouts: list[Rollout]) -> list[Rollout]:
        """Between `score` and `compute_advantages`: each hook's `on_rollouts` (NuRL's gate).

        Hooks may replace rollouts (e.g. regenerate a group from a hinted prompt) but must keep
        how many each process holds: DeepSpeed steps need the same micro-batch count on every
        rank, and `mini_batches` must divide it.
        """
        for hook in self.hooks:
            rollouts = hook.on_rollouts(rollout_context(self, rollouts))
        return rollouts

    def compute_advantages(self, rollouts: list[Rollout]) -> dict[str, float]:
        """Group-normalised advantages over the whole step (all ranks); returns reward stats."""
        return steps.compute_advantages(
            rollouts, self.backend, self.update_settings.advantage_scale
        )

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """μ epochs x `mini_batches` optimizer steps over the rollouts; returns loss stats."""
        u = self.update_settings
        cfg = UpdateConfig(
            u.ppo_epochs,
            u.mini_batches,
            u.micro_batch_size,
            self.pad_id,
            u.mask_truncated,
            self.sampling.temperature,
            u.share_prompt,
            u.sort_by_length,
            u.tis_cap,
        )
        return steps.update(rollouts, self.backend, self.loss, cfg, self.ref_model)
