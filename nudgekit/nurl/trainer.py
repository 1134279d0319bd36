"""`NuRLTrainer`: the two-stage NuRL schedule on top of the GRPO trainer, in one resumable run.

0. **Hints** (before any update): the hint source writes hints for every training problem (a
   `self` source writes them with the starting policy, i.e. offline with respect to RL); the
   store is written to `<run_dir>/hints.jsonl` and beside every checkpoint's trainer state
   (`step-N/hints.jsonl`, in its manifest). A `file` source reuses a store.
1. **Stage 1**: plain GRPO until the plateau detector fires or `stage1_max_steps` is reached
   (with `start=step0` the gate is already open here).
2. **Filter**: the stage-1 policy samples `filter_n` rollouts per training problem; problems
   solved `filter_n`/`filter_n` are dropped (`filter_solved=false` keeps all).
3. **Stage 2**: `stage2_steps` steps of GRPO with the `HintInjector` gate open, on the filtered
   problems, continuing from the stage-1 weights, optimizer and data position.

The stage, the filtered problem ids and the stage boundaries live in the trainer's
`extra_state` (`trainer_state.json`), the hint store in the checkpoint's `hints.jsonl`
(checkpoints that carry it inside `extra_state["hints"]`, as older ones do, still load), and a
checkpoint is written right after hint collection and right after
the filter, so a run killed at any point resumes where it was (`resume=auto`).

With `injector.gate=never` the same schedule is the fair baseline (`grpo_tiny_continued`): stage
1, the same filter, then the same number of steps without hints. `train/reward` is always the
reward of the original (un-hinted) rollouts, comparable with the baseline; the reward over the
rollouts trained on, hinted ones included, is `train/reward_mixed`. The switch step and its
reason are `nurl/stage2_start` and `nurl/stage1_plateau` (metrics and summary). Departures from
the paper: "flat" is `PlateauDetector`'s rule (no new best by > `min_delta` for `patience_steps`
steps, on every watched metric); the paper's stage 2 restarts from a saved stage-1 checkpoint,
here the run simply continues (weights, optimizer state included; the sampler starts a new epoch
over the filtered problems).
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.nurl.gate import decision_rows
from nudgekit.nurl.inject import HintInjector
from nudgekit.nurl.pipeline import collection_metrics
from nudgekit.nurl.sources import HintCollection
from nudgekit.nurl.store import HintRecord, HintStore
from nudgekit.rl.rollout_engine import generating
from nudgekit.rl.runconfig import describe, flatten
from nudgekit.rl.sampler import PromptSampler
from nudgekit.rl.trainer import GRPOTrainer
from nudgekit.rl.validation import sample_validation

log = logging.getLogger(__name__)

STARTS = ("step0", "after_plateau")
HINTS_FILE = "hints.jsonl"  # in the run dir and in every checkpoint
HINTS_KEY = "hint_count"  # in extra_state once hints were collected (0: no hint source)
_MANAGED = ("max_steps", "stop_on_plateau")  # set by the schedule, not by config


class NuRLTrainer(GRPOTrainer):
    """GRPO + NuRL's gate under the two-stage schedule (the `pipeline=nurl` entry).

    Args:
        injector: the gate/injection hook (`HintInjector`; default: zero_pass, G-1).
        hints: a hint source with `collect(problems)` (None only with `gate=never`).
        start: "after_plateau" (hints in stage 2 only; the paper) or "step0" (from the start).
        stage1_max_steps: step cap of stage 1 (it ends earlier when the plateau detector fires).
        stage2_steps: steps after the filter.
        filter_n: samples per problem in the filter.
        filter_solved: drop problems solved `filter_n`/`filter_n` before stage 2.
        filter_temperature: sampling temperature of the filter.
        **grpo: every `GRPOTrainer` argument except `max_steps` and `stop_on_plateau`.
    """

    def __init__(
        self,
        injector: HintInjector | None = None,
        hints: Any = None,
        start: str = "after_plateau",
        stage1_max_steps: int = 100,
        stage2_steps: int = 100,
        filter_n: int = 8,
        filter_solved: bool = True,
        filter_temperature: float = 1.0,
        **grpo: Any,
    ) -> None:
        bad = [k for k in grpo if k in _MANAGED or k not in _GRPO_PARAMS]
        if bad:
            raise NudgekitError(f"nurl: unexpected trainer arguments {bad}")
        if start not in STARTS:
            raise NudgekitError(f"nurl: start={start!r} is not one of {list(STARTS)}")
        if stage1_max_steps < 0 or stage2_steps < 0 or filter_n < 1:
            raise NudgekitError("nurl: need stage1_max_steps >= 0, stage2_steps >= 0, filter_n >= 1")
        self.injector = injector if injector is not None else HintInjector()
        if hints is None and self.injector.gate != "never":
            raise NudgekitError(f"nurl: gate={self.injector.gate} needs a hint source (hints=...)")
        hooks = [self.injector, *grpo.pop("rollout_hooks", ())]
        super().__init__(**grpo, max_steps=max(stage1_max_steps + stage2_steps, 1),
                         stop_on_plateau=False, rollout_hooks=hooks)
        self.hint_source, self.start = hints, start
        self.stage1_max_steps, self.stage2_steps = stage1_max_steps, stage2_steps
        self.filter_n, self.filter_solved = filter_n, filter_solved
        self.filter_temperature = filter_temperature
        self.tracker: Any = None

    # ------------------------------------------------------------------ schedule state

    @property
    def stage(self) -> int:
        return int(self.extra_state.get("stage", 1))

    @property
    def _stopped(self) -> bool:  # a stage-1 plateau switches stages; it never ends the run
        return False

    def train(self, tracker: Any = None) -> dict[str, float]:
        self.tracker = tracker
        if self.stage == 2:
            self.max_steps = int(self.extra_state["stage2_start"]) + self.stage2_steps
        self._ensure_hints()
        self.injector.enabled = self.start == "step0" or self.stage == 2
        return super().train(tracker)

    def train_step(self) -> dict[str, float]:
        if self.stage == 1 and self._stage1_done():
            self.enter_stage2()
        metrics = super().train_step()
        nurl, decisions = self.injector.step_metrics(self.backend)
        metrics.update(original_rollout_metrics(metrics, nurl))
        metrics.update(nurl)
        metrics["nurl/stage"] = float(self.stage)
        if self.tracker is not None and decisions:
            self.tracker.log_table("nurl/hint_decisions", decision_rows(decisions), step=self.step)
        return metrics

    def _stage1_done(self) -> bool:
        plateaued = self.plateau is not None and self.plateau.plateaued
        return plateaued or self.step >= self.stage1_max_steps

    # ------------------------------------------------------------------ step 0: hints

    def _ensure_hints(self) -> None:
        if HINTS_KEY in self.extra_state:  # resumed: `load_checkpoint` restored the store
            if self.backend.is_main and not (self.run_dir / HINTS_FILE).exists():
                self.injector.store.save(self.run_dir / HINTS_FILE)  # a resumed run's own dir
            return
        if self.hint_source is None:
            self.extra_state[HINTS_KEY] = 0
            return
        start = time.perf_counter()
        collection = self.collect_hints()
        store = collection.store
        self.injector.store = store
        self.extra_state[HINTS_KEY] = len(store)
        metrics = collection_metrics(collection, len(self.train_problems),
                                     time.perf_counter() - start)
        self.extra_state["hint_metrics"] = metrics
        if self.backend.is_main:
            store.save(self.run_dir / HINTS_FILE)
        if self.tracker is not None:
            self.tracker.log(metrics, step=self.step)
        self.save_checkpoint()

    def collect_hints(self) -> HintCollection:
        """Every rank writes hints for its strided share of the problems; results are merged."""
        world, rank = self.backend.world_size, self.backend.rank
        mine = self.train_problems[rank::world]
        if hasattr(self.hint_source, "bind"):  # a `self` source writes with the live policy
            self.hint_source.bind(self.engine, self.tokenizer)
        with generating(self.engine, self.backend):  # hf: gathered (ZeRO-3); vLLM: its copy
            part = self.hint_source.collect(mine)
        parts = self.backend.all_gather_object(
            ([r.to_json() for r in part.records], part.dropped, dict(part.rejections),
             part.generations))
        out = HintCollection()
        for records, dropped, rejections, generations in parts:
            out.records += [HintRecord(**r) for r in records]
            out.dropped.update(dropped)
            out.rejections.update(rejections)
            out.generations += generations
        return out

    # ------------------------------------------------------------------ the switch

    def enter_stage2(self) -> None:
        """Filter the training problems with the stage-1 policy and open the gate."""
        reason = "plateau" if self.plateau is not None and self.plateau.plateaued else "step_cap"
        kept = self.filter_problems() if self.filter_solved else list(self.train_problems)
        if not kept:
            log.warning("nurl: every training problem is solved %d/%d; stage 2 keeps them all",
                        self.filter_n, self.filter_n)
            kept = list(self.train_problems)
        self.extra_state.update(stage=2, stage2_start=self.step, stage1_end=reason,
                                filtered_ids=[p.id for p in kept])
        # a fresh epoch over the filtered problems, numbered after stage 1's (a new permutation)
        epoch = self.sampler.epoch + (self.sampler.index > 0)
        self.sampler = PromptSampler(kept, self.prompts_per_step, seed=self.seed,
                                     start_epoch=epoch)
        self.max_steps = self.step + self.stage2_steps
        self.injector.enabled = True
        metrics = {"nurl/filter_kept": float(len(kept)),
                   "nurl/filter_dropped": float(len(self.train_problems) - len(kept)),
                   "nurl/stage2_start": float(self.step),
                   "nurl/stage1_plateau": float(reason == "plateau")}
        self.history.update(metrics)
        log.info("nurl: stage 1 ended at step %d (%s); %d/%d problems kept for stage 2",
                 self.step, reason, len(kept), len(self.train_problems))
        if self.tracker is not None:
            self.tracker.log(metrics, step=self.step)
        self.save_checkpoint()

    def filter_problems(self) -> list:
        """Problems the current policy does not solve `filter_n`/`filter_n` (un-hinted)."""
        world, rank = self.backend.world_size, self.backend.rank
        with generating(self.engine, self.backend):  # hf: gathered (ZeRO-3); vLLM: its copy
            records = sample_validation(
                self.engine, self.train_problems, self.prompt, self.verifier,
                indices=range(rank, len(self.train_problems), world), n=self.filter_n,
                max_new_tokens=self.max_new_tokens, temperature=self.filter_temperature,
                top_p=self.top_p, stop=self.stop, seed=self.seed + 7919 * (self.step + 1),
            )
        parts = self.backend.all_gather_object([(r["index"], r["correct"]) for r in records])
        solved = {i for part in parts for i, c in part if c >= self.filter_n}
        return [p for i, p in enumerate(self.train_problems) if i not in solved]

    # ------------------------------------------------------------------ resume

    def checkpoint_files(self) -> dict[str, Any]:
        """The hint store, once collected, beside the trainer state (`step-N/hints.jsonl`)."""
        return {HINTS_FILE: self.injector.store.save} if self.extra_state.get(HINTS_KEY) else {}

    def load_checkpoint(self, path: Path) -> None:
        """GRPO's resume, then the hint store: `hints.jsonl` of the checkpoint, or the list
        an older checkpoint kept in `extra_state["hints"]` (moved out of the state)."""
        super().load_checkpoint(path)
        legacy = self.extra_state.pop("hints", None)
        if legacy is not None:
            self.injector.store = HintStore.from_state(legacy)
            self.extra_state[HINTS_KEY] = len(self.injector.store)
        elif self.extra_state.get(HINTS_KEY):
            self.injector.store = HintStore.load(Path(path) / HINTS_FILE)

    def before_resume(self, state: dict[str, Any]) -> None:
        extra = state.get("extra_state") or {}
        if int(extra.get("stage", 1)) == 2:  # the sampler runs over the filtered problems
            by_id = {p.id: p for p in self.train_problems}
            kept = [by_id[i] for i in extra["filtered_ids"]]
            self.sampler = PromptSampler(kept, self.prompts_per_step, seed=self.seed)

    def run_config(self) -> dict[str, Any]:
        """GRPO's run config plus the schedule's (stage-2 length is run length, not recorded)."""
        out = super().run_config()
        own = {"injector": describe(self.injector), "start": self.start,
               "stage1_max_steps": self.stage1_max_steps, "filter_n": self.filter_n,
               "filter_solved": self.filter_solved, "filter_temperature": self.filter_temperature}
        out.update(flatten(own))
        return out

    def final_metrics(self) -> dict[str, float]:
        out = super().final_metrics()
        out["nurl/stage"] = float(self.stage)
        out["nurl/hints"] = float(len(self.injector.store))
        if "stage2_start" in self.extra_state:  # where (and why) stage 1 ended
            out["nurl/stage2_start"] = float(self.extra_state["stage2_start"])
            out["nurl/stage1_plateau"] = float(self.extra_state.get("stage1_end") == "plateau")
        for key, value in (self.extra_state.get("hint_metrics") or {}).items():
            out[key] = float(value)
        return out


def original_rollout_metrics(metrics: dict[str, float], nurl: dict[str, float]) -> dict:
    """`train/reward` (and its std and zero-std share) over the G original rollouts of each
    group, the curve comparable with plain GRPO; the values over the rollouts actually trained on
    (hinted ones merged in) move to `train/*_mixed`."""
    if "nurl/reward_original" not in nurl:
        return {}
    out = {f"{k}_mixed": metrics[k] for k in
           ("train/reward", "train/reward_std", "train/frac_reward_zero_std") if k in metrics}
    out["train/reward"] = nurl["nurl/reward_original"]
    out["train/reward_std"] = nurl["nurl/reward_std_original"]
    out["train/frac_reward_zero_std"] = nurl["nurl/frac_reward_zero_std_before"]
    return out


def _grpo_params() -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(GRPOTrainer).parameters.items()}


_GRPO_PARAMS = _grpo_params()


def _signature() -> inspect.Signature:
    """NuRL's own parameters + GRPOTrainer's (less the managed ones), for config validation."""
    own = [p for k, p in inspect.signature(NuRLTrainer.__init__).parameters.items()
           if k not in ("self", "grpo")]
    grpo = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for k, p in _GRPO_PARAMS.items()
            if k not in _MANAGED]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    return inspect.Signature(own + grpo)


NuRLTrainer.__signature__ = _signature()  # so `dry_run` / config tests bind every key
