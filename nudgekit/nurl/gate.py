"""NuRL's pass-rate gate as pure functions over scored rollouts.

Between `score` and `compute_advantages`, for every group (one prompt of one step):

1. `pass_rates`: the share of its rollouts whose reward counts as a success;
2. `select_groups`: which groups get hints. `zero_pass` (the paper): pass rate 0; `always`:
   every group (the "no gate" ablation); `never`: none (plain GRPO with NuRL's bookkeeping);
   a group whose problem has no usable hint is skipped and logged (`no_hint`);
3. `hint_split`: how many rollouts are regenerated with the hint (`G-1`, keeping one original
   un-hinted rollout so an all-success hinted group still has reward variance; or `G`);
4. `check_prompt_budget`: a hinted prompt longer than the prompt budget is an error or a logged
   skip (`too_long`), never silently truncated;
5. `merge_groups`: the group becomes its first `keep` original rollouts + the regenerated ones,
   each rollout keeping its own prompt ids and the group id, in the original group order.

`HintDecision` / `decision_rows` are the per-group log (step, problem id, group id, pre/post pass
rate, hint). Everything here works on any objects with `group_id`, `problem_id` and `reward`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from nudgekit.errors import NudgekitError

GATES = ("zero_pass", "always", "never")
HINTED_PER_GROUP = ("G-1", "G")
ON_OVERFLOW = ("error", "skip")


class ScoredRollout(Protocol):
    group_id: int
    problem_id: str
    reward: float


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise NudgekitError(f"nurl: {name}={value!r} is not one of {list(allowed)}")
    return value


def pass_rates(rollouts: Iterable[ScoredRollout], success: float = 1.0) -> dict[int, float]:
    """Group id -> share of rollouts with `reward >= success`, in first-seen group order."""
    hits: dict[int, list[int]] = {}
    for r in rollouts:
        hits.setdefault(r.group_id, []).append(int(r.reward >= success))
    return {g: sum(h) / len(h) for g, h in hits.items()}


def select_groups(rates: Mapping[int, float], gate: str) -> list[int]:
    """The groups the gate opens for, in the order of `rates`.

    Args:
        rates: group id -> pass rate (from `pass_rates`).
        gate: "zero_pass" (pass rate exactly 0), "always" or "never".
    """
    check_choice("gate", gate, GATES)
    if gate == "never":
        return []
    if gate == "always":
        return list(rates)
    return [g for g, rate in rates.items() if rate == 0.0]


def hint_split(group_size: int, hinted_per_group: str) -> tuple[int, int]:
    """`(kept originals, regenerated hinted rollouts)` for a group of `group_size`.

    "G-1" keeps one un-hinted rollout (the paper); "G" replaces the whole group.
    """
    check_choice("hinted_per_group", hinted_per_group, HINTED_PER_GROUP)
    if group_size < 1 or (hinted_per_group == "G-1" and group_size < 2):
        raise NudgekitError(
            f"nurl: hinted_per_group={hinted_per_group} needs a group size of at least "
            f"{2 if hinted_per_group == 'G-1' else 1}, got {group_size}"
        )
    keep = 1 if hinted_per_group == "G-1" else 0
    return keep, group_size - keep


def check_prompt_budget(
    n_tokens: int, max_prompt_tokens: int | None, problem_id: str, on_overflow: str = "error"
) -> bool:
    """Whether a hinted prompt of `n_tokens` fits; over budget raises or returns False.

    Args:
        n_tokens: the hinted prompt's length in tokens.
        max_prompt_tokens: the budget (None: no limit).
        problem_id: named in the error.
        on_overflow: "error" raises `NudgekitError`; "skip" returns False (the caller logs it).
    """
    check_choice("on_overflow", on_overflow, ON_OVERFLOW)
    if max_prompt_tokens is None or n_tokens <= max_prompt_tokens:
        return True
    if on_overflow == "error":
        raise NudgekitError(
            f"nurl: hinted prompt of problem {problem_id} has {n_tokens} tokens > "
            f"max_prompt_tokens={max_prompt_tokens} (raise it, shorten hints, or set "
            "on_overflow=skip)"
        )
    return False


def merge_groups(
    rollouts: Sequence[Any], regenerated: Sequence[Any], hinted_groups: Iterable[int], keep: int
) -> list[Any]:
    """Replace each hinted group by its first `keep` originals plus its regenerated rollouts.

    Groups stay in their original order; un-hinted groups are returned untouched (same objects).

    Raises:
        ValueError: a regenerated rollout of a group that was not hinted, or of another problem.
    """
    hinted = set(hinted_groups)
    problem_of = {r.group_id: r.problem_id for r in rollouts}
    new: dict[int, list[Any]] = {}
    for r in regenerated:
        if r.group_id not in hinted:
            raise ValueError(f"regenerated rollout for group {r.group_id}, which was not hinted")
        if r.problem_id != problem_of[r.group_id]:
            raise ValueError(f"group {r.group_id}: regenerated rollout of another problem")
        new.setdefault(r.group_id, []).append(r)
    out: list[Any] = []
    kept: dict[int, int] = {}
    emitted: set[int] = set()
    for r in rollouts:
        g = r.group_id
        if g not in hinted:
            out.append(r)
            continue
        if kept.get(g, 0) < keep:
            out.append(r)
            kept[g] = kept.get(g, 0) + 1
        if g not in emitted and kept.get(g, 0) >= keep:
            out.extend(new.get(g, []))
            emitted.add(g)
    return out


@dataclass
class HintDecision:
    """One gate decision: a group that was hinted or that the gate wanted to hint but skipped.

    Args:
        step: the GRPO step (the step number its metrics are logged under, counted from 1).
        problem_id: the problem.
        group_id: the group within the step.
        pre_pass_rate: pass rate of the G un-hinted rollouts.
        post_pass_rate: pass rate of the hinted rollouts (None when skipped).
        status: "hinted", "no_hint" (no usable hint in the store) or "too_long".
        hint: the hint text ("" when none).
        hinted: number of hinted rollouts in the merged group.
    """

    step: int
    problem_id: str
    group_id: int
    pre_pass_rate: float
    post_pass_rate: float | None
    status: str
    hint: str = ""
    hinted: int = 0


def decision_rows(decisions: Iterable[HintDecision]) -> list[dict[str, Any]]:
    """Table rows for `Tracker.log_table("nurl/hint_decisions", rows)`."""
    return [asdict(d) for d in decisions]
