"""`NuRLSchedule`: NuRL's two stages as a schedule of the GRPO trainer, in one resumable run.

The schedule is a `TrainerHook` (`pipeline.schedule`) and sees the trainer only through its
`ScheduleContext` (step, ranks, run dir, tracker, generation handles, training problems, plateau
state; it replaces the training set with `use_problems` and records its summary metrics with
`record`); the `HintInjector` it holds is the rollout hook between scoring and advantages and
sees only the step's `RolloutContext`.

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

The stage, the filtered problem ids and the stage boundaries are the schedule's state (saved as
`extra_state` in `trainer_state.json`), the hint store in the checkpoint's `hints.jsonl`
(checkpoints that carry it inside `extra_state["hints"]`, as older ones do, still load), and a
checkpoint is written right after hint collection and right after the filter, so a run killed at any point resumes where it was (`resume=auto`).

With `schedule.injector.gate=never` the same schedule is the fair baseline
(`grpo_tiny_continued`): stage 1, the same filter, then the same number of steps without hints. `train/reward` is always the
reward of the original (un-hinted) rollouts, comparable with the baseline; the reward over the
rollouts trained on, hinted ones included, is `train/reward_mixed`. The switch step and its
reason are `nurl/stage2_start` and `nurl/stage1_plateau` (metrics and summary). Departures from
the paper: "flat" is `PlateauDetector`'s rule (no new best by > `min_delta` for `patience_steps`
steps, on every watched metric); the paper's stage 2 restarts from a saved stage-1 checkpoint,
here the run simply continues (weights, optimizer state included; the sampler starts a new epoch
over the filtered problems).
"""

from __future__ import annotations

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
from nudgekit.rl.hooks import RolloutContext, ScheduleContext, TrainerHook
from nudgekit.rl.rollouts import Rollout
from nudgekit.rl.runconfig import describe, flatten
from nudgekit.rl.validation import sample_validation

log = logging.getLogger(__name__)

STARTS = ("step0", "after_plateau")
HINTS_FILE = "hints.jsonl"  # in the run dir and in every checkpoint
HINTS_KEY = "hint_count"  # in the state once hints were collected (0: no hint source)


class NuRLSchedule(TrainerHook):
    """Hints, stage 1, the filter and stage 2 as the GRPO trainer's schedule (`pipeline=nurl`).

    Args:
        injector: the gate/injection rollout hook (`HintInjector`; default: zero_pass, G-1).
        hints: a hint source with `collect(problems)` (None only with `gate=never`).
        start: "after_plateau" (hints in stage 2 only; the paper) or "step0" (from the start).
        stage1_max_steps: step cap of stage 1 (it ends earlier when the plateau detector fires).
        stage2_steps: steps after the filter.
        filter_n: samples per problem in the filter.
        filter_solved: drop problems solved `filter_n`/`filter_n` before stage 2.
        filter_temperature: sampling temperature of the filter.

    The run lasts `stage1_max_steps + stage2_steps` steps (the trainer's `max_steps` is not
    used), and a plateau switches stages instead of ending the run.
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
    ) -> None:
        if start not in STARTS:
            raise NudgekitError(f"nurl: start={start!r} is not one of {list(STARTS)}")
        if stage1_max_steps < 0 or stage2_steps < 0 or filter_n < 1:
            raise NudgekitError(
                "nurl: need stage1_max_steps >= 0, stage2_steps >= 0, filter_n >= 1"
            )
        self.injector = injector if injector is not None else HintInjector()
        if hints is None and self.injector.gate != "never":
            raise NudgekitError(f"nurl: gate={self.injector.gate} needs a hint source (hints=...)")
        self.hint_source, self.start = hints, start
        self.stage1_max_steps, self.stage2_steps = stage1_max_steps, stage2_steps
        self.filter_n, self.filter_solved = filter_n, filter_solved
        self.filter_temperature = filter_temperature
        self.state: dict[str, Any] = {}  # JSON-able; the trainer saves it in every checkpoint

    @property
    def stage(self) -> int:
        return int(self.state.get("stage", 1))

    # ------------------------------------------------------------------ run length

    def end_step(self, ctx: ScheduleContext, end: int) -> int:
        if self.stage == 2:
            return int(self.state["stage2_start"]) + self.stage2_steps
        return max(self.stage1_max_steps + self.stage2_steps, 1)

    def stops_on_plateau(self, stop: bool) -> bool:
        return False  # a stage-1 plateau switches stages; it never ends the run

    # ------------------------------------------------------------------ hook points

    def on_train_start(self, ctx: ScheduleContext) -> None:
        self._ensure_hints(ctx)
        self.injector.enabled = self.start == "step0" or self.stage == 2

    def on_step_start(self, ctx: ScheduleContext) -> None:
        if self.stage == 1 and self._stage1_done(ctx):
            self.enter_stage2(ctx)

    def on_rollouts(self, ctx: RolloutContext) -> list[Rollout]:
        return self.injector(ctx)

    def on_step_end(self, ctx: ScheduleContext, metrics: dict[str, float]) -> None:
        nurl, decisions = self.injector.step_metrics(ctx)
        metrics.update(original_rollout_metrics(metrics, nurl))
        metrics.update(nurl)
        metrics["nurl/stage"] = float(self.stage)
        if decisions:
            ctx.log_table("nurl/hint_decisions", decision_rows(decisions))

    def _stage1_done(self, ctx: ScheduleContext) -> bool:
        return ctx.plateaued or ctx.step >= self.stage1_max_steps

    # ------------------------------------------------------------------ step 0: hints

    def _ensure_hints(self, ctx: ScheduleContext) -> None:
        if HINTS_KEY in self.state:  # resumed: `load_state_dict` restored the store
            if ctx.is_main and not (ctx.run_dir / HINTS_FILE).exists():
                self.injector.store.save(ctx.run_dir / HINTS_FILE)  # a resumed run's own dir
            return
        if self.hint_source is None:
            self.state[HINTS_KEY] = 0
            return
        start = time.perf_counter()
        problems = ctx.train_problems
        collection = collect_hints(ctx, problems, self.hint_source)
        store = collection.store
        self.injector.store = store
        self.state[HINTS_KEY] = len(store)
        metrics = collection_metrics(collection, len(problems), time.perf_counter() - start)
        self.state["hint_metrics"] = metrics
        if ctx.is_main:
            store.save(ctx.run_dir / HINTS_FILE)
        ctx.log(metrics)
        ctx.save_checkpoint()

    # ------------------------------------------------------------------ the switch

    def enter_stage2(self, ctx: ScheduleContext) -> None:
        """Filter the training problems with the stage-1 policy and open the gate."""
        reason = "plateau" if ctx.plateaued else "step_cap"
        problems = ctx.train_problems
        kept = self.filter_problems(ctx) if self.filter_solved else list(problems)
        if not kept:
            log.warning(
                "nurl: every training problem is solved %d/%d; stage 2 keeps them all",
                self.filter_n,
                self.filter_n,
            )
            kept = list(problems)
        self.state.update(
            stage=2, stage2_start=ctx.step, stage1_end=reason, filtered_ids=[p.id for p in kept]
        )
        # a fresh epoch over the filtered problems, numbered after stage 1's (a new permutation)
        ctx.use_problems(kept)
        self.injector.enabled = True
        metrics = {
            "nurl/filter_kept": float(len(kept)),
            "nurl/filter_dropped": float(len(problems) - len(kept)),
            "nurl/stage2_start": float(ctx.step),
            "nurl/stage1_plateau": float(reason == "plateau"),
        }
        ctx.record(metrics)
        log.info(
            "nurl: stage 1 ended at step %d (%s); %d/%d problems kept for stage 2",
            ctx.step,
            reason,
            len(kept),
            len(problems),
        )
        ctx.log(metrics)
        ctx.save_checkpoint()

    def filter_problems(self, ctx: ScheduleContext) -> list:
        """Problems the current policy does not solve `filter_n`/`filter_n` (un-hinted)."""
        problems, s = ctx.train_problems, ctx.sampling
        with ctx.generating():  # hf: gathered (ZeRO-3); vLLM: its copy
            records = sample_validation(
                ctx.engine,
                problems,
                ctx.prompt,
                ctx.verifier,
                indices=range(ctx.rank, len(problems), ctx.world_size),
                n=self.filter_n,
                max_new_tokens=s.max_new_tokens,
                temperature=self.filter_temperature,
                top_p=s.top_p,
                stop=s.stop,
                seed=ctx.seed + 7919 * (ctx.step + 1),
            )
        parts = ctx.all_gather_object([(r["index"], r["correct"]) for r in records])
        solved = {i for part in parts for i, c in part if c >= self.filter_n}
        return [p for i, p in enumerate(problems) if i not in solved]

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def checkpoint_files(self) -> dict[str, Any]:
        """The hint store, once collected, beside the trainer state (`step-N/hints.jsonl`)."""
        return {HINTS_FILE: self.injector.store.save} if self.state.get(HINTS_KEY) else {}

    def before_resume(self, ctx: ScheduleContext, state: dict[str, Any]) -> None:
        extra = state.get("extra_state") or {}
        if int(extra.get("stage", 1)) == 2:  # the steps draw from the filtered problems
            by_id = {p.id: p for p in ctx.train_problems}
            ctx.use_problems([by_id[i] for i in extra["filtered_ids"]], start_epoch=0)

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """The schedule's state, and the hint store: `hints.jsonl` of the checkpoint, or the
        list an older checkpoint kept in `extra_state["hints"]` (moved out of the state)."""
        self.state = dict(state)
        legacy = self.state.pop("hints", None)
        if legacy is not None:
            self.injector.store = HintStore.from_state(legacy)
            self.state[HINTS_KEY] = len(self.injector.store)
        elif self.state.get(HINTS_KEY):
            self.injector.store = HintStore.load(Path(path) / HINTS_FILE)

    def run_config(self) -> dict[str, Any]:
        """The schedule's settings (stage-2 length is run length, not recorded)."""
        own = {
            "injector": describe(self.injector),
            "start": self.start,
            "stage1_max_steps": self.stage1_max_steps,
            "filter_n": self.filter_n,
            "filter_solved": self.filter_solved,
            "filter_temperature": self.filter_temperature,
        }
        return flatten({"schedule": own})

    def final_metrics(self) -> dict[str, float]:
        out = {"nurl/stage": float(self.stage), "nurl/hints": float(len(self.injector.store))}
        if "stage2_start" in self.state:  # where (and why) stage 1 ended
            out["nurl/stage2_start"] = float(self.state["stage2_start"])
            out["nurl/stage1_plateau"] = float(self.state.get("stage1_end") == "plateau")
        for key, value in (self.state.get("hint_metrics") or {}).items():
            out[key] = float(value)
        return out


def collect_hints(ctx: ScheduleContext, problems: list, source: Any) -> HintCollection:
    """Every rank writes hints for its strided share of `problems`; results are merged."""
    mine = problems[ctx.rank :: ctx.world_size]
    if hasattr(source, "bind"):  # a `self` source writes with the live policy
        source.bind(ctx.engine, ctx.tokenizer)
    with ctx.generating():  # hf: gathered (ZeRO-3); vLLM: its copy
        part = source.collect(mine)
    parts = ctx.all_gather_object(
        ([r.to_json() for r in part.records], part.dropped, dict(part.rejections), part.generations)
    )
    out = HintCollection()
    for records, dropped, rejections, generations in parts:
        out.records += [HintRecord(**r) for r in records]
        out.dropped.update(dropped)
        out.rejections.update(rejections)
        out.generations += generations
    return out


def original_rollout_metrics(metrics: dict[str, float], nurl: dict[str, float]) -> dict:
    """`train/reward` (and its std and zero-std share) over the G original rollouts of each
    group, the curve comparable with plain GRPO; the values over the rollouts actually trained on
    (hinted ones merged in) move to `train/*_mixed`."""
    if "nurl/reward_original" not in nurl:
        return {}
    out = {
        f"{k}_mixed": metrics[k]
        for k in ("train/reward", "train/reward_std", "train/frac_reward_zero_std")
        if k in metrics
    }
    out["train/reward"] = nurl["nurl/reward_original"]
    out["train/reward_std"] = nurl["nurl/reward_std_original"]
    out["train/frac_reward_zero_std"] = nurl["nurl/frac_reward_zero_std_before"]
    return out
