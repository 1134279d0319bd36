"""NuRL's gate as pure functions, on hand-built rollouts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from nudgekit.errors import NudgekitError
from nudgekit.nurl import (
    HintDecision,
    check_prompt_budget,
    decision_rows,
    hint_split,
    merge_groups,
    pass_rates,
    select_groups,
)
from nudgekit.rl.advantages import group_advantages


@dataclass
class R:
    problem_id: str
    group_id: int
    reward: float
    prompt_ids: list[int] = field(default_factory=list)
    hinted: bool = False


def step_rollouts():
    """Three groups of G=4: group 0 all wrong, group 1 one right, group 2 all wrong."""
    rewards = {0: [0, 0, 0, 0], 1: [0, 1, 0, 0], 2: [0, 0, 0, 0]}
    return [
        R(f"p{g}", g, float(x), prompt_ids=[10 + g, 20, i])
        for g, rs in rewards.items()
        for i, x in enumerate(rs)
    ]


def test_pass_rates_and_gates():
    rollouts = step_rollouts()
    rates = pass_rates(rollouts)
    assert rates == {0: 0.0, 1: 0.25, 2: 0.0}
    assert select_groups(rates, "zero_pass") == [0, 2]
    assert select_groups(rates, "always") == [0, 1, 2]
    assert select_groups(rates, "never") == []
    assert pass_rates([R("p", 0, 0.5)], success=0.5) == {0: 1.0}
    with pytest.raises(NudgekitError, match="gate='sometimes'"):
        select_groups(rates, "sometimes")


def test_hint_split():
    assert hint_split(8, "G-1") == (1, 7)
    assert hint_split(8, "G") == (0, 8)
    with pytest.raises(NudgekitError, match="at least 2"):
        hint_split(1, "G-1")
    with pytest.raises(NudgekitError, match="hinted_per_group='G-2'"):
        hint_split(8, "G-2")


def test_prompt_budget():
    assert check_prompt_budget(10, None, "p")
    assert check_prompt_budget(10, 10, "p")
    assert not check_prompt_budget(11, 10, "p", on_overflow="skip")
    with pytest.raises(NudgekitError, match="problem p has 11 tokens > max_prompt_tokens=10"):
        check_prompt_budget(11, 10, "p")


def hinted_for(groups, n, success_at=()):
    """n hinted rollouts per group with the hint in their prompt ids; success where asked."""
    return [
        R(f"p{g}", g, float((g, i) in success_at), prompt_ids=[10 + g, 20, 99, i], hinted=True)
        for g in groups
        for i in range(n)
    ]


def test_merge_keeps_one_original_and_untouched_groups():
    rollouts = step_rollouts()
    keep, n = hint_split(4, "G-1")
    regen = hinted_for([0, 2], n, success_at={(0, 0), (0, 1), (0, 2), (2, 1)})
    merged = merge_groups(rollouts, regen, [0, 2], keep)
    assert len(merged) == 12
    assert [r.group_id for r in merged] == [0] * 4 + [1] * 4 + [2] * 4
    # group 1 (had a success) is the very same objects, in order
    assert merged[4:8] == rollouts[4:8] and all(a is b for a, b in zip(merged[4:8], rollouts[4:8]))
    for g in (0, 2):
        group = [r for r in merged if r.group_id == g]
        assert [r.hinted for r in group] == [False, True, True, True]
        assert group[0] is rollouts[4 * g]  # the first original, with its own prompt ids
        assert all(r.prompt_ids[2] == 99 for r in group[1:])  # hinted prompts kept per rollout
    # an all-success hinted group (0) still has variance thanks to the un-hinted rollout
    rewards = torch.tensor([r.reward for r in merged])
    groups = torch.tensor([r.group_id for r in merged])
    adv = group_advantages(rewards, groups)
    assert (adv[:4] != 0).all() and adv[0] < 0 < adv[1]
    assert (adv[8:12] != 0).any()


def test_merge_whole_group_and_errors():
    rollouts = step_rollouts()
    regen = hinted_for([0], 4)
    merged = merge_groups(rollouts, regen, [0], keep=0)
    assert [r.hinted for r in merged[:4]] == [True] * 4 and merged[4:] == rollouts[4:]
    with pytest.raises(ValueError, match="not hinted"):
        merge_groups(rollouts, hinted_for([1], 3), [0], keep=1)
    wrong = [R("other", 0, 0.0)]
    with pytest.raises(ValueError, match="another problem"):
        merge_groups(rollouts, wrong, [0], keep=1)


def test_decision_rows():
    rows = decision_rows(
        [
            HintDecision(
                step=3,
                problem_id="p0",
                group_id=0,
                pre_pass_rate=0.0,
                post_pass_rate=0.75,
                status="hinted",
                hint="h",
                hinted=3,
            ),
            HintDecision(
                step=3,
                problem_id="p2",
                group_id=2,
                pre_pass_rate=0.0,
                post_pass_rate=None,
                status="no_hint",
            ),
        ]
    )
    assert rows[0] == {
        "step": 3,
        "problem_id": "p0",
        "group_id": 0,
        "pre_pass_rate": 0.0,
        "post_pass_rate": 0.75,
        "status": "hinted",
        "hint": "h",
        "hinted": 3,
    }
    assert rows[1]["post_pass_rate"] is None and rows[1]["hinted"] == 0
