"""`HintInjector`: NuRL's gate + G-1 hint injection as a GRPO rollout hook.

The GRPO trainer runs its hooks' `on_rollouts` between `score` and `compute_advantages` (NuRL's
schedule hands them to this hook); it sees only the step's `RolloutContext` and:

1. computes every local group's pass rate and asks the gate (`zero_pass` | `always` | `never`)
   which groups to hint;
2. looks up each chosen group's hint in the `HintStore` (none: logged `no_hint`), renders the
   hinted prompt's length (`ctx.prompt_tokens`: the trainer's own prompt, question + hint,
   chat-templated) against `max_prompt_tokens` (over: an error, or a logged `too_long` skip);
3. regenerates `G-1` (or `G`) scored rollouts for **all** chosen groups in **one** batched engine
   call (`ctx.regenerate(pairs, hint, n)`), each rollout carrying the exact hinted prompt ids it
   was sampled with, so the trainer's log-probs are computed under the hint;
4. merges each group to 1 original + G-1 hinted rollouts (`gate.merge_groups`).

Every rank calls `regenerate`, even with nothing to regenerate: under ZeRO-3 the trainer's
`backend.generation()` gathers the partitioned parameters (a collective every rank must enter),
after which each rank decodes on its own, so ranks that hint different numbers of groups neither
deadlock nor wait on one another's forward passes.

Per-step statistics (`step_metrics`, reduced over ranks) and the decision table are collected
after advantages are known, so the advantage distribution of hinted rollouts can be reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.nurl.gate import (
    GATES,
    HINTED_PER_GROUP,
    ON_OVERFLOW,
    HintDecision,
    check_choice,
    check_prompt_budget,
    hint_split,
    merge_groups,
    pass_rates,
    select_groups,
)
from nudgekit.nurl.store import HintStore


def zero_std_groups(rollouts: Sequence[Any]) -> tuple[int, int]:
    """`(groups whose rewards are all equal, groups)` among `rollouts`."""
    by_group: dict[int, set[float]] = {}
    for r in rollouts:
        by_group.setdefault(r.group_id, set()).add(float(r.reward))
    return sum(len(v) == 1 for v in by_group.values()), len(by_group)


class HintInjector:
    """The rollout hook, `(ctx: RolloutContext) -> rollouts`; NuRL's schedule sets `store` and
    toggles `enabled`.

    Args:
        gate: "zero_pass" (the paper), "always" or "never".
        hinted_per_group: "G-1" (keep one un-hinted rollout; the paper) or "G".
        max_prompt_tokens: budget for hinted prompts (None: unchecked).
        on_overflow: "error" or "skip" (logged) for an over-long hinted prompt.
        success: reward at or above which a rollout counts as solved.
    """

    def __init__(
        self,
        gate: str = "zero_pass",
        hinted_per_group: str = "G-1",
        max_prompt_tokens: int | None = None,
        on_overflow: str = "error",
        success: float = 1.0,
    ) -> None:
        self.gate = check_choice("gate", gate, GATES)
        self.hinted_per_group = check_choice("hinted_per_group", hinted_per_group, HINTED_PER_GROUP)
        self.on_overflow = check_choice("on_overflow", on_overflow, ON_OVERFLOW)
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise NudgekitError(f"nurl: max_prompt_tokens must be >= 1, got {max_prompt_tokens}")
        self.max_prompt_tokens, self.success = max_prompt_tokens, success
        self.store = HintStore()
        self.enabled = True
        self._last: dict[str, Any] = {}

    # ------------------------------------------------------------------ the hook

    def __call__(self, ctx: Any) -> list[Any]:
        start, rollouts = time.perf_counter(), ctx.rollouts
        rates = pass_rates(rollouts, self.success)
        wanted = select_groups(rates, self.gate) if self.enabled else []
        chosen, hints, decisions = self._choose(ctx, rates, wanted)
        keep, n_hinted = hint_split(ctx.group_size, self.hinted_per_group)
        # every rank enters generation, even with nothing to do (ZeRO-3 gathers collectively)
        regenerated = ctx.regenerate(chosen, lambda p: hints[p.id], n_hinted)
        merged = merge_groups(rollouts, regenerated, [g for g, _ in chosen], keep)
        post = pass_rates(regenerated, self.success)
        for g, p in chosen:
            decisions.append(
                HintDecision(
                    ctx.step + 1,
                    p.id,
                    g,
                    rates[g],
                    post.get(g, 0.0),
                    "hinted",
                    hints[p.id],
                    n_hinted,
                )
            )
        self._last = {
            "before": zero_std_groups(rollouts),
            "after": zero_std_groups(merged),
            "original": [float(r.reward) for r in rollouts],
            "rates": rates,
            "wanted": len(wanted),
            "regenerated": regenerated,
            "merged": merged,
            "decisions": decisions,
            "seconds": time.perf_counter() - start,
        }
        return merged

    def _choose(
        self, ctx: Any, rates: dict[int, float], wanted: list[int]
    ) -> tuple[list[tuple[int, Any]], dict[str, str], list]:
        problem_of = {r.group_id: r.problem_id for r in ctx.rollouts}
        step = ctx.step + 1
        chosen, hints, decisions = [], {}, []
        for g in wanted:
            pid = problem_of[g]
            hint = self.store.hint(pid)
            if hint is None:
                decisions.append(HintDecision(step, pid, g, rates[g], None, "no_hint"))
                continue
            problem = ctx.problem(pid)
            if self.max_prompt_tokens is not None:
                n_tokens = ctx.prompt_tokens(problem, hint)
                if not check_prompt_budget(n_tokens, self.max_prompt_tokens, pid, self.on_overflow):
                    decisions.append(HintDecision(step, pid, g, rates[g], None, "too_long", hint))
                    continue
            chosen.append((g, problem))
            hints[pid] = hint
        return chosen, hints, decisions

    # ------------------------------------------------------------------ reporting

    def step_metrics(self, comm: Any) -> tuple[dict[str, float], list[HintDecision]]:
        """`nurl/*` metrics of the last step over all ranks, and every rank's decisions.

        Call after advantages are computed (they are read from the regenerated rollouts).

        Args:
            comm: the ranks' collectives (`all_reduce_sum`, `all_gather_object`): the
                schedule's `ScheduleContext`, or a trainer backend.
        """
        last = self._last or {
            "before": (0, 0),
            "after": (0, 0),
            "rates": {},
            "wanted": 0,
            "original": [],
            "regenerated": [],
            "merged": [],
            "decisions": [],
            "seconds": 0.0,
        }
        regen, original = last["regenerated"], last["original"]
        statuses = [d.status for d in last["decisions"]]
        local = {
            "zb": last["before"][0],
            "groups": last["before"][1],
            "za": last["after"][0],
            "groups_after": last["after"][1],
            "zero_pass": sum(rate == 0.0 for rate in last["rates"].values()),
            "wanted": last["wanted"],
            "hinted": statuses.count("hinted"),
            "no_hint": statuses.count("no_hint"),
            "too_long": statuses.count("too_long"),
            "n_regen": len(regen),
            "regen_ok": sum(r.reward >= self.success for r in regen),
            "regen_tokens": sum(len(r.completion_ids) for r in regen),
            "lifted": lifted_groups(regen, self.success),
            "n_orig": len(original),
            "orig_sum": sum(original),
            "orig_sq": sum(x * x for x in original),
        }
        # one reduction over all ranks; `t` holds the totals by name
        t = dict(zip(local, comm.all_reduce_sum(list(local.values())), strict=True))
        gathered = comm.all_gather_object(
            ([r.advantage for r in regen], last["seconds"], last["decisions"])
        )
        adv = [a for g in gathered for a in g[0]]
        before = t["zb"] / t["groups"] if t["groups"] else 0.0
        after = t["za"] / t["groups_after"] if t["groups_after"] else 0.0
        metrics = {
            "nurl/enabled": float(self.enabled),
            "nurl/groups_zero_pass": t["zero_pass"],
            "nurl/groups_gated": t["wanted"],
            "nurl/groups_hinted": t["hinted"],
            "nurl/groups_lifted": t["lifted"],
            "nurl/groups_no_hint": t["no_hint"],
            "nurl/groups_too_long": t["too_long"],
            "nurl/frac_reward_zero_std_before": before,
            "nurl/frac_reward_zero_std_after": after,
            # learning signal: groups whose rewards are not all equal, among the G original
            # rollouts (comparable with plain GRPO) and after the hinted ones were merged in
            "nurl/signal_unhinted": 1.0 - before if t["groups"] else 0.0,
            "nurl/signal_mixed": 1.0 - after if t["groups_after"] else 0.0,
            "nurl/regen_rollouts": t["n_regen"],
            "nurl/regen_tokens": t["regen_tokens"],
            "nurl/regen_s": max(g[1] for g in gathered),
        }
        if n := t["n_orig"]:
            mean = t["orig_sum"] / n
            var = (t["orig_sq"] - n * mean * mean) / (n - 1) if n > 1 else 0.0
            metrics["nurl/reward_original"] = mean
            metrics["nurl/reward_std_original"] = max(var, 0.0) ** 0.5
        if t["n_regen"]:  # nothing regenerated: no hinted pass rate or advantages to report
            metrics["nurl/hinted_pass_rate"] = t["regen_ok"] / t["n_regen"]
            metrics.update(distribution("nurl/hinted_adv", adv))
        return metrics, [d for g in gathered for d in g[2]]


def lifted_groups(regenerated: Sequence[Any], success: float) -> int:
    """Groups in which at least one hinted rollout reached `success`."""
    return len({r.group_id for r in regenerated if r.reward >= success})


def distribution(prefix: str, values: Sequence[float]) -> dict[str, float]:
    """Mean, std, min, max and share > 0 of `values` (zeros when empty)."""
    if not values:
        return {f"{prefix}_{k}": 0.0 for k in ("mean", "std", "min", "max", "pos_frac")}
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / n) ** 0.5
    return {
        f"{prefix}_mean": mean,
        f"{prefix}_std": std,
        f"{prefix}_min": min(values),
        f"{prefix}_max": max(values),
        f"{prefix}_pos_frac": sum(v > 0 for v in values) / n,
    }
