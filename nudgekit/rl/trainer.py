"""`GRPOTrainer`: a recipe-shaped GRPO trainer (setup / train / save_checkpoint / cleanup).

One GRPO step, as named methods (each a thin call into `nudgekit.rl.steps`):

1. `generate_rollouts`: B prompts from a seeded, resumable sampler, rendered by the chat prompt;
   G samples each from the engine, which samples from the *live* policy (`rollout_engine`: the hf
   engine runs on the trainer's module; a colocated vLLM engine takes the trainer's weights after
   every update).
2. `score`: the verifier turns each completion into a reward.
3. `refine_rollouts`: the extension point between scoring and advantages; it runs
   `rollout_hooks` (NuRL's hint injection regenerates rollouts here). Identity for plain GRPO.
4. `compute_advantages`: group-normalised advantages (`group_advantages`) over explicit group ids.
5. `update`: μ epochs over `mini_batches` optimizer steps, each accumulated over micro-batches;
   log-probs are recomputed by the trainer on the exact prompt + completion ids the engine used;
   then the rollout engine takes the new weights (vLLM: pushed; hf: nothing to do).

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

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nudgekit.data.problem import Problem
from nudgekit.engines.sampling import derive_seed
from nudgekit.rl import dist, rollout_engine, runconfig, steps
from nudgekit.rl.backends import TorchBackend
from nudgekit.rl.checkpoint import CheckpointManager, export_hf
from nudgekit.rl.losses import ClippedPolicyLoss
from nudgekit.rl.plateau import PlateauDetector
from nudgekit.rl.precision import prepare_policy
from nudgekit.rl.rollouts import Rollout, pad_id
from nudgekit.rl.sampler import PromptSampler
from nudgekit.rl.stats import peak_rss_mb, perf_metrics
from nudgekit.rl.steps import SamplingConfig, UpdateConfig
from nudgekit.rl.validation import table_rows, validate

log = logging.getLogger(__name__)

RolloutHook = Callable[["GRPOTrainer", list[Rollout]], list[Rollout]]


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
        stop_on_plateau: end training when the detector fires.
        max_steps: GRPO steps (rollout + update rounds).
        prompts_per_step: B, prompts per step (all ranks together).
        group_size: G, samples per prompt.
        max_new_tokens, temperature, top_p, stop: sampling for rollouts.
        ppo_epochs: μ, passes over each step's rollouts.
        mini_batches: optimizer steps per epoch (the rollouts split in this many parts).
        micro_batch_size: rows per forward/backward (gradient accumulation below a mini-batch).
        advantage_scale: "group" (GRPO), "batch" or "none" (Dr. GRPO).
        mask_truncated: drop completions that hit `max_new_tokens` from the loss.
        val_every: validate every this many steps (and at the start and the end; 0: never).
        val_n: samples per validation problem.
        val_temperature: validation sampling temperature.
        table_rows: sample completions logged per validation.
        save_every: checkpoint every this many steps (0: only at the end).
        keep_checkpoints: keep the newest k checkpoints (None: all).
        checkpoint_weights_only: checkpoints hold only the policy as a plain HF model in
            `step-N/model/` (for export and evaluation); they cannot be resumed.
        checkpoint_dir: where checkpoints go (default `<run_dir>/checkpoints`).
        resume: "auto" (newest checkpoint that verifies, if any), a checkpoint path, or None.
        resume_allow: run-config keys that may differ from the checkpoint's on resume (e.g.
            `["optimizer.lr"]`; a prefix like `optimizer` or a last part like `lr` also
            matches); any other changed key is refused. Allowed values take effect, lr included.
        export: write the final policy as a plain HF checkpoint to `<run_dir>/policy`.
        seed: seeds data order and sampling.
        num_threads: torch CPU threads (None: leave as is).
        rollout_hooks: callables `(trainer, rollouts) -> rollouts` run by `refine_rollouts`.
        share_prompt: in the update, run each distinct prompt of a micro-batch once and share its
            keys/values across the rows that use it (same loss and gradients; see `logprobs`).
        sort_by_length: in the update, cut micro-batches from rollouts ordered by completion
            length when that pads fewer tokens (`rollouts.by_length`; same loss and gradients):
            e.g. NuRL's hinted rollouts, longer than the rest, no longer pad every micro-batch.
        gradient_checkpointing: recompute each decoder layer's activations in backward instead
            of keeping them (`precision`); the gradient pass then does not share prompts.
        tis_cap: truncated importance-sampling correction for engine/trainer mismatch: weight
            each token's policy loss by `min(exp(old - sampled), tis_cap)` (None: off).
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
        group_size: int = 8,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        ppo_epochs: int = 1,
        mini_batches: int = 1,
        micro_batch_size: int = 32,
        advantage_scale: str = "group",
        mask_truncated: bool = False,
        val_every: int = 10,
        val_n: int = 4,
        val_temperature: float = 1.0,
        table_rows: int = 8,
        save_every: int = 0,
        keep_checkpoints: int = 2,
        checkpoint_dir: str | None = None,
        resume: str | None = "auto",
        resume_allow: Sequence[str] = (),
        export: bool = True,
        seed: int = 0,
        num_threads: int | None = None,
        rollout_hooks: Sequence[RolloutHook] = (),
        share_prompt: bool = True,
        sort_by_length: bool = True,
        gradient_checkpointing: bool = False,
        checkpoint_weights_only: bool = False,
        tis_cap: float | None = None,
    ) -> None:
        runconfig.check_settings(
            train_problems=len(train_problems), max_steps=max_steps,
            prompts_per_step=prompts_per_step, group_size=group_size, ppo_epochs=ppo_epochs,
            mini_batches=mini_batches, micro_batch_size=micro_batch_size,
            keep_checkpoints=keep_checkpoints, advantage_scale=advantage_scale)
        self.model_spec, self.verifier, self.prompt = model, verifier, prompt
        self.train_problems, self.val_problems = list(train_problems), list(val_problems or [])
        self.engine_factory, self.optimizer_factory = engine, optimizer
        self.scheduler_factory = lr_scheduler
        self.loss = loss if loss is not None else ClippedPolicyLoss()
        self.backend = backend if backend is not None else TorchBackend()
        self.plateau, self.stop_on_plateau, self.stop = plateau, stop_on_plateau, list(stop)
        self.max_steps, self.prompts_per_step, self.group_size = max_steps, prompts_per_step, group_size
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.ppo_epochs, self.mini_batches = ppo_epochs, mini_batches
        self.micro_batch_size, self.advantage_scale = micro_batch_size, advantage_scale
        self.mask_truncated, self.table_rows = mask_truncated, table_rows
        self.val_every, self.val_n, self.val_temperature = val_every, val_n, val_temperature
        self.save_every, self.keep_checkpoints = save_every, keep_checkpoints
        self.checkpoint_dir, self.resume, self.export = checkpoint_dir, resume, export
        self.resume_allow = [str(k) for k in (resume_allow or ())]
        self.seed, self.num_threads = seed, num_threads
        self.rollout_hooks = list(rollout_hooks)
        self.share_prompt, self.sort_by_length = share_prompt, sort_by_length
        self.gradient_checkpointing = gradient_checkpointing
        self.checkpoint_weights_only = checkpoint_weights_only
        self.tis_cap = tis_cap
        self.step = 0
        self._saved_step: int | None = None
        self.extra_state: dict[str, Any] = {}  # JSON-able; saved in every checkpoint (NuRL)
        self.history: dict[str, float] = {}

    # ------------------------------------------------------------------ recipe interface

    def setup(self, run_dir: str | Path) -> None:
        """Load the policy (and reference), build backend, engine, sampler; maybe resume."""
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        # rank, world size and device decided once, before anything loads (cuda:LOCAL_RANK)
        self.process = dist.setup_process(getattr(self.model_spec, "device", "auto"))
        spec = dist.on_device(self.model_spec, self.process.device)
        self.tokenizer = spec.load_tokenizer()
        module = prepare_policy(spec.load_model(), self.gradient_checkpointing,
                                self.share_prompt)
        self.pad_id = pad_id(self.tokenizer)
        self.ref_model = None
        if self.loss.beta != 0.0:
            self.ref_model = spec.load_model().eval().requires_grad_(False)
        self.grad_accum = runconfig.grad_accum_steps(
            self.prompts_per_step, self.process.world_size, self.group_size, self.mini_batches,
            self.micro_batch_size)
        self.backend.setup(module, self.optimizer_factory, self.scheduler_factory,
                           self.grad_accum, self.micro_batch_size)
        self.run_dir = Path(self.backend.broadcast_object(str(run_dir)))
        self.engine = rollout_engine.build(self.engine_factory, self.backend.module,
                                           self.tokenizer)
        self.sampler = PromptSampler(self.train_problems, self.prompts_per_step, seed=self.seed)
        ckpt_dir = Path(self.checkpoint_dir) if self.checkpoint_dir else self.run_dir / "checkpoints"
        self.checkpoints = CheckpointManager(ckpt_dir, keep=self.keep_checkpoints,
                                             weights_only=self.checkpoint_weights_only)
        path = self.checkpoints.resolve(self.resume, self.backend)
        if path is not None:
            self.load_checkpoint(path)
        if self.engine.syncs_weights:  # the policy as loaded (or resumed), in the engine's dtype
            self.engine.push(self.backend)

    def run(self, tracker: Any = None, run_dir: str | Path | None = None) -> dict[str, float]:
        """Pipeline entry: setup, train, export, cleanup; returns the final metrics."""
        self.setup(run_dir if run_dir is not None else Path.cwd())
        try:
            return self.train(tracker)
        finally:
            self.cleanup()

    def train(self, tracker: Any = None) -> dict[str, float]:
        """Run GRPO steps until `max_steps` (or a plateau); validate, log and checkpoint."""
        if self.step == 0 and self._validating:
            initial = self._validate(tracker)
            self.history["val/pass@1_initial"] = initial["val/pass@1"]
            self._update_plateau(initial)
        start = time.perf_counter()
        while self.step < self.max_steps and not self._stopped:
            metrics = self.train_step()
            if self._validating and self.step % self.val_every == 0:
                metrics.update(self._validate(tracker, log=False))
            self._update_plateau(metrics)
            if tracker is not None:
                tracker.log(metrics, step=self.step)
            if self.save_every and self.step % self.save_every == 0:
                self.save_checkpoint()
        if self._validating and self.history.get("val/step") != self.step:
            self._validate(tracker)
        self.history["perf/train_s"] = self.history.get("perf/train_s", 0.0) + (
            time.perf_counter() - start
        )
        if self._saved_step != self.step:
            self.save_checkpoint()
        if self.export:
            export_hf(self.backend, self.tokenizer, self.run_dir / "policy")
        return self.final_metrics()

    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of everything needed to resume bit-for-bit."""
        state = {
            "sampler": self.sampler.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
            "history": self.history,
            "extra_state": self.extra_state,
            "config": self.run_config(),
        }
        path = self.checkpoints.save(self.step, self.backend, state, self.checkpoint_files(),
                                     self.tokenizer)
        self._saved_step = self.step
        log.info("grpo: checkpoint %s", path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Resume from a verified checkpoint: check the run config, load, apply allowed changes.

        Raises:
            NudgekitError: a run-config key differs and `resume_allow` does not cover it.
        """
        recorded = self.checkpoints.read_state(path)
        allowed = runconfig.check_resume(
            recorded.get("config"), self.run_config(), self.resume_allow, path)
        self.before_resume(recorded)
        state = self.checkpoints.load(path, self.backend)
        hparams = runconfig.optimizer_overrides(allowed)
        if hparams:  # loading the optimizer state restored the checkpoint's values
            self.backend.set_hparams(hparams)
        self.step = self._saved_step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        if self.plateau is not None and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
        self.history = dict(state.get("history") or {})
        self.extra_state = dict(state.get("extra_state") or {})
        log.info("grpo: resumed from %s at step %d", path, self.step)

    def run_config(self) -> dict[str, Any]:
        """The settings that define this run (recorded in checkpoints, checked on resume)."""
        return runconfig.grpo_config(self)

    def checkpoint_files(self) -> dict[str, Callable[[Path], Any]]:
        """Files the next checkpoint holds beside the trainer state: `{name: write(path)}`."""
        return {}

    def before_resume(self, state: dict[str, Any]) -> None:
        """Hook run after the config check and before any state is loaded (NuRL: sampler)."""

    def cleanup(self) -> None:
        self.backend.close()
        if getattr(self, "engine", None) is not None:
            self.engine.close()
        self.engine = None
        self.ref_model = None

    # ------------------------------------------------------------------ one GRPO step

    def train_step(self) -> dict[str, float]:
        """generate -> score -> refine -> advantages -> update; returns the step's metrics."""
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
        metrics.update({"train/lr": self.backend.lr(),
                        **perf_metrics(tokens, t0, t_gen, t_score, t_end)})
        if self.engine.syncs_weights:
            metrics["perf/weight_sync_s"] = t_end - t_sync
        return metrics

    def generate_rollouts(
        self, problems: Sequence[tuple[int, Problem]], hint: Callable[[Problem], str] | None = None,
        n: int | None = None, salt: int = 0,
    ) -> list[Rollout]:
        """Sample `n` (default G) completions per `(group id, problem)` in one engine call.

        Args:
            problems: `(group id, problem)` pairs (group id = index in this step's batch).
            hint: optional `problem -> hint text`; hinted prompts give `hinted=True` rollouts.
            n: samples per prompt.
            salt: varies the sampling seeds (a regeneration must not repeat the first draw).
        """
        sampling = SamplingConfig(self.max_new_tokens, self.temperature, self.top_p, self.stop)
        step_seed = derive_seed(derive_seed(self.seed, self.step), salt)
        return steps.generate_rollouts(
            self.engine, self.backend, self.prompt, problems,
            self.group_size if n is None else n, sampling, step_seed, hint,
        )

    def score(self, rollouts: list[Rollout]) -> None:
        """Set every rollout's reward from the verifier (which never raises)."""
        steps.score(rollouts, self.verifier)

    def refine_rollouts(self, rollouts: list[Rollout]) -> list[Rollout]:
        """Between `score` and `compute_advantages`: run the rollout hooks (NuRL's gate).

        Hooks may replace rollouts (e.g. regenerate a group from a hinted prompt) but must keep
        how many each process holds: DeepSpeed steps need the same micro-batch count on every
        rank, and `mini_batches` must divide it.
        """
        for hook in self.rollout_hooks:
            rollouts = hook(self, rollouts)
        return rollouts

    def compute_advantages(self, rollouts: list[Rollout]) -> dict[str, float]:
        """Group-normalised advantages over the whole step (all ranks); returns reward stats."""
        return steps.compute_advantages(rollouts, self.backend, self.advantage_scale)

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """μ epochs x `mini_batches` optimizer steps over the rollouts; returns loss stats."""
        cfg = UpdateConfig(self.ppo_epochs, self.mini_batches, self.micro_batch_size,
                           self.pad_id, self.mask_truncated, self.temperature, self.share_prompt,
                           self.sort_by_length, self.tis_cap)
        return steps.update(rollouts, self.backend, self.loss, cfg, self.ref_model)

    # ------------------------------------------------------------------ validation & plateau

    @property
    def _validating(self) -> bool:
        return bool(self.val_problems) and self.val_every > 0

    @property
    def _stopped(self) -> bool:
        return bool(self.stop_on_plateau and self.plateau is not None and self.plateau.plateaued)

    def _validate(self, tracker: Any, log: bool = True) -> dict[str, float]:
        """pass@1 on the validation problems (sharded over ranks); logs a sample table."""
        metrics, records = validate(
            self.engine, self.backend, self.val_problems, self.prompt, self.verifier,
            n=self.val_n, max_new_tokens=self.max_new_tokens, temperature=self.val_temperature,
            top_p=self.top_p, stop=self.stop, seed=self.seed,
        )
        self.history.update(metrics)
        self.history["val/step"] = self.step
        if tracker is not None:
            if log:
                tracker.log(metrics, step=self.step)
            tracker.log_table("val/samples", table_rows(records, self.table_rows), step=self.step)
        return metrics

    def _update_plateau(self, metrics: dict[str, float]) -> None:
        if self.plateau is None:
            return
        if self.plateau.observe(metrics, self.step) and "train/plateau_step" not in self.history:
            self.history["train/plateau_step"] = self.step
            log.info("grpo: %s plateaued at step %d", self.plateau.metrics, self.step)

    def final_metrics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.history.items() if v is not None}
        out["train/steps"] = float(self.step)
        out["perf/peak_rss_mb"] = peak_rss_mb()
        return out
