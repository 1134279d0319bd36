"""NuRL's step vs nudgekit's own GRPO step, with a known fraction f of groups hinted.

The step's 16 prompts are a fixed pool of 16 tiny-world problems (so every step sees each of
them once), and the hint store holds an oracle hint for exactly f of them; the injector's gate
is `always`, so exactly f of the groups get G-1 rollouts regenerated from a hinted prompt each
step. The baseline is the same trainer with `gate=never` (the hook runs, hints nothing).
NuRL's predicted cost is the extra generation: f·(G-1)/G of the step's first generation.

    NUDGEKIT_CACHE=/work/zoo_cache python experiments/bench/nurl_overhead.py
    python experiments/bench/nurl_overhead.py --fractions 0.5 --rounds 1 --steps 2   # shrink

Reports, per f: the extra generation measured in-step (the hook's regeneration time / the same
step's first generation) and as step-time overhead vs the GRPO runs, each against prediction.
Writes `experiments/bench/results/nurl_overhead.json`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing_rl import (  # noqa: E402
    Work,
    alternate,
    emit,
    nudgekit_trainer,
    peak_rss_mb,
    problems_and_verifier,
    summarise,
    table,
    write_json,
)

SCRIPT = Path(__file__).resolve()


def nurl_worker(work: Work, fraction: float, run_dir: str) -> dict[str, Any]:
    """GRPO + `HintInjector(gate=always)` with hints for `fraction` of a fixed 16-problem pool."""
    from nudgekit.nurl.inject import HintInjector
    from nudgekit.nurl.store import HintRecord, HintStore
    from nudgekit.rl import RolloutHook

    pool = problems_and_verifier(work)[0][: work.prompts]
    hinted = pool[: round(fraction * len(pool))]
    injector = HintInjector(gate="always" if hinted else "never")
    injector.store = HintStore(
        HintRecord(id=p.id, hint=p.meta["hints"]["partial"], source="oracle") for p in hinted
    )
    trainer = nudgekit_trainer(work, run_dir, train_problems=pool, hooks=[RolloutHook(injector)])
    steps = []
    for i in range(work.warmup + work.steps):
        m = trainer.train_step()
        nurl = injector.step_metrics(trainer.backend)[0]
        regen = nurl["nurl/regen_s"]
        if i >= work.warmup:
            steps.append(
                {
                    "step_s": m["perf/step_s"],
                    "generate_s": m["perf/generate_s"],
                    "regen_s": regen,
                    "update_s": m["perf/update_s"],
                    "regen_share": regen / m["perf/generate_s"],
                    "hinted_frac": m["train/hinted_frac"],
                    "regen_rows": nurl["nurl/regen_rollouts"],
                    "regen_tokens": nurl["nurl/regen_tokens"],
                    "first_tokens": m["perf/gen_tokens_per_s"] * m["perf/generate_s"],
                }
            )
    return {"steps": steps, "peak_rss_mb": peak_rss_mb()}


def predicted(fraction: float, group_size: int) -> float:
    """Extra generation as a share of the step's first generation: f·(G-1)/G."""
    return fraction * (group_size - 1) / group_size


def report_row(f: float, runs: list[dict], base: dict[str, float], g: int) -> dict[str, Any]:
    m = summarise(
        runs, ("step_s", "generate_s", "regen_s", "update_s", "regen_share", "hinted_frac")
    )
    pred = predicted(f, g)
    step_pred = pred * base["generate_s"] / base["step_s"]
    step_over = m["step_s"] / base["step_s"] - 1
    return {
        "f": f,
        "hinted_rollouts": m["hinted_frac"],
        "step_s": m["step_s"],
        "regen/gen measured": m["regen_share"],
        "regen/gen predicted": pred,
        "regen: measured/predicted": m["regen_share"] / pred if pred else float("nan"),
        "step overhead measured": step_over,
        "step overhead predicted": step_pred,
        "step: measured/predicted": step_over / step_pred if step_pred else float("nan"),
    }


def parse() -> tuple[argparse.Namespace, Work]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--fractions", default="0.25,0.5")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    a = ap.parse_args()
    return a, Work(steps=a.steps, max_new_tokens=a.max_new_tokens)


def main() -> None:
    a, work = parse()
    if a.worker is not None:
        with tempfile.TemporaryDirectory() as tmp:
            return emit(nurl_worker(work, a.worker, tmp))
    fractions = [0.0] + [float(f) for f in a.fractions.split(",")]
    args = ["--steps", str(work.steps), "--max-new-tokens", str(work.max_new_tokens)]
    runs = alternate(SCRIPT, {f"f={f}": [str(f), *args] for f in fractions}, a.rounds)
    base = summarise(runs["f=0.0"])
    rows = [report_row(f, runs[f"f={f}"], base, work.group_size) for f in fractions[1:]]
    print(f"GRPO (gate=never) step {base['step_s']:.2f}s, generation {base['generate_s']:.2f}s")
    print(table(rows))
    path = write_json(
        "nurl_overhead",
        replace(work),
        {
            "grpo": base,
            "rows": rows,
            "runs": runs,
            "within_10pct": [abs(r["regen: measured/predicted"] - 1) <= 0.1 for r in rows],
            "median_regen_ratio": statistics.median(r["regen: measured/predicted"] for r in rows),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
