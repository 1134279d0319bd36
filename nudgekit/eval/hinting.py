"""NuRL's hinted groups, step by step: what the gate decided and what hinting bought.

Two sources, both written by a NuRL run: the `nurl/hint_decisions` table (one row per zero-pass
group the gate looked at: step, problem, status "hinted" / "no_hint" / "too_long", pass rate
before and after hinting) and `metrics.jsonl` (per step: groups hinted, the share of groups with
zero reward spread before and after hinting, the hinted groups' pass rate). Pure functions over
the loaded rows, so the notebook only plots.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

SIGNAL_KEYS = (
    "nurl/groups_zero_pass",
    "nurl/groups_hinted",
    "nurl/frac_reward_zero_std_before",
    "nurl/frac_reward_zero_std_after",
    "nurl/hinted_pass_rate",
)


def signal_by_step(metrics: Sequence[dict], keys: Sequence[str] = SIGNAL_KEYS) -> list[dict]:
    """One row per training step that logged NuRL's gate metrics: `step` and each of `keys`
    (absent keys as None). Rows without `nurl/groups_hinted` (validation, hint collection) are
    skipped."""
    rows = [m for m in metrics if "nurl/groups_hinted" in m]
    return [{"step": int(m["step"]), **{k.split("/", 1)[1]: m.get(k) for k in keys}} for m in rows]


def decisions_by_step(decisions: Sequence[dict]) -> list[dict]:
    """Per step: how many gated groups got each status, and the hinted groups' mean pass rate
    before and after hinting (None when no group was hinted that step)."""
    by_step: dict[int, list[dict]] = defaultdict(list)
    for row in decisions:
        by_step[int(row["step"])].append(row)
    out = []
    for step in sorted(by_step):
        rows = by_step[step]
        counts = Counter(r["status"] for r in rows)
        hinted = [r for r in rows if r["status"] == "hinted"]
        out.append(
            {
                "step": step,
                "gated": len(rows),
                "hinted": counts["hinted"],
                "no_hint": counts["no_hint"],
                "too_long": counts["too_long"],
                "pre_pass_rate": _mean([r["pre_pass_rate"] for r in hinted]),
                "post_pass_rate": _mean([r["post_pass_rate"] for r in hinted]),
            }
        )
    return out


def hinted_outcomes(decisions: Sequence[dict]) -> dict[str, float]:
    """Over the whole run: hinted groups, the share that hinting turned into a learning signal
    (post pass rate strictly between 0 and 1, i.e. rewards no longer all equal), the share still
    all-wrong and all-right, and the mean post-hint pass rate."""
    post = [float(r["post_pass_rate"]) for r in decisions if r["status"] == "hinted"]
    if not post:
        return {"hinted_groups": 0.0}
    n = len(post)
    return {
        "hinted_groups": float(n),
        "signal_frac": sum(0.0 < p < 1.0 for p in post) / n,
        "still_zero_frac": sum(p == 0.0 for p in post) / n,
        "all_solved_frac": sum(p == 1.0 for p in post) / n,
        "mean_post_pass_rate": sum(post) / n,
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
