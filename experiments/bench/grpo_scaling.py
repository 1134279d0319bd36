"""nudgekit's GRPO step time vs group size G and vs completion length.

Sweeps G in {2, 4, 8, 16} (64 new tokens) and the completion budget in {32, 64, 128, 256}
(G = 8), 16 prompts per step, otherwise the `grpo_vs_trl` work. `tiny-policy` ends its answers
after ~45 tokens, so for the length sweep every completion is made to run to its budget (the
engine is given an EOS id the model never samples): the curve measures cost per generated
length, not the model's habits. Each configuration runs in its own subprocess (one thread),
configurations interleaved round by round.

    NUDGEKIT_CACHE=/work/zoo_cache python experiments/bench/grpo_scaling.py
    python experiments/bench/grpo_scaling.py --groups 2,8 --lengths 32,128 --steps 1  # shrink

Writes `experiments/bench/results/grpo_scaling.json`.
"""

from __future__ import annotations

import argparse
import functools
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
    summarise,
    table,
    time_nudgekit,
    write_json,
)

SCRIPT = Path(__file__).resolve()
NEVER = -1  # an EOS id no model samples: completions run to their budget


def worker(work: Work, force_length: bool) -> dict[str, Any]:
    from nudgekit.engines.hf import HFEngine

    extra = {}
    if force_length:
        extra["engine"] = functools.partial(HFEngine, max_batch_size=128, eos_token_ids=[NEVER])
    with tempfile.TemporaryDirectory() as tmp:
        return time_nudgekit(work, nudgekit_trainer(work, tmp, **extra))


def rows_of(runs: dict[str, list[dict]], configs: dict[str, tuple[int, int]]) -> list[dict]:
    rows = []
    for name, (g, length) in configs.items():
        m = summarise(runs[name], ("step_s", "generate_s", "update_s", "tokens"))
        tokens = m["tokens"]
        rows.append(
            {
                "G": g,
                "max_new_tokens": length,
                "step_s": m["step_s"],
                "generate_s": m["generate_s"],
                "update_s": m["update_s"],
                "tokens": tokens,
                "ms/token": 1000 * m["step_s"] / tokens,
                "peak_rss_mb": m["peak_rss_mb"],
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)  # G, length, force
    ap.add_argument("--groups", default="2,4,8,16")
    ap.add_argument("--lengths", default="32,64,128,256")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args()
    work = Work(steps=a.steps)
    if a.worker:
        g, length, force = a.worker
        return emit(worker(replace(work, group_size=g, max_new_tokens=length), bool(force)))
    sweeps = {
        "G": {f"G={g}": (int(g), 64) for g in a.groups.split(",")},
        "length": {f"L={n}": (8, int(n)) for n in a.lengths.split(",")},
    }
    out: dict[str, Any] = {}
    for sweep, configs in sweeps.items():
        force = int(sweep == "length")
        sides = {
            k: [str(g), str(n), str(force), "--steps", str(a.steps)]
            for k, (g, n) in configs.items()
        }
        runs = alternate(SCRIPT, sides, a.rounds)
        rows = rows_of(runs, configs)
        print(f"\nstep time vs {sweep} (medians; force_length={bool(force)})")
        print(table(rows))
        out[sweep] = {"rows": rows, "runs": runs, "force_length": bool(force)}
    print(f"wrote {write_json('grpo_scaling', work, out)}")


if __name__ == "__main__":
    main()
