"""One GRPO step with vLLM rollouts and weight sync (`engine=vllm`) vs the hf engine
(`engine=hf`), same trainer, same work, side by side.

Same `tiny-policy` (float32), tiny-world training problems (level 4), G=8, 16 prompts per step,
up to 64 new tokens, T=1, μ=1, β=0, token-mean loss, one torch thread. The `vllm` side samples
from a colocated in-process vLLM engine that takes the trainer's weights after every update
(`perf/weight_sync_s` is that push); the `hf` side samples from the trainer's module. Each side
runs in its own subprocess, alternating (hf vllm hf vllm ...); per-step times are medians over
the timed steps after a warm-up step. Run it in the vLLM venv, so both sides use the same torch:

    .venv-vllm/bin/python experiments/bench/grpo_vllm.py --rounds 2 --tag cpu

On a GPU machine (`make install-gpu`, plus `pip install trl` for the third side) the same
script measures the GPU build, and `trl-vllm` adds TRL's `GRPOTrainer` with colocated vLLM
(`use_vllm=True, vllm_mode="colocate"`, `_trl_vllm.py`) on the same work:

    python experiments/bench/grpo_vllm.py --sides hf,vllm,trl-vllm --rounds 3 --tag gpu

Prints a table and writes `experiments/bench/results/grpo_vllm[_<tag>].json`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing_rl import (  # noqa: E402
    Work,
    alternate,
    emit,
    nudgekit_trainer,
    paired_ratios,
    summarise,
    table,
    time_nudgekit,
    write_json,
)

SCRIPT = Path(__file__).resolve()
SIDES = ("hf", "vllm", "trl-vllm")
KEYS = ("step_s", "cpu_s", "generate_s", "update_s", "sync_s")


def worker(work: Work, engine: str) -> dict[str, Any]:
    """Set up the trainer with the `engine` side's rollouts and time its steps."""
    from nudgekit.models import ModelSpec
    from nudgekit.rl.rollout_engine import VLLMRollouts
    from nudgekit.zoo import resolve

    overrides: dict[str, Any] = {}
    if engine == "vllm":
        spec = ModelSpec(str(resolve(work.model)))
        # the GPU share TRL's colocate side gets too (ignored by the CPU build)
        overrides["engine"] = functools.partial(VLLMRollouts, spec=spec, gpu_memory_utilization=0.3)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = nudgekit_trainer(work, run_dir, **overrides)
        syncs: list[float] = []
        step = trainer.train_step

        def timed_step() -> dict[str, float]:
            m = step()
            syncs.append(m.get("perf/weight_sync_s", 0.0))
            return m

        trainer.train_step = timed_step
        out = time_nudgekit(work, trainer)
        for s, sync in zip(out["steps"], syncs[work.warmup :]):
            s["sync_s"] = sync
        trainer.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", choices=SIDES, default="hf", help=argparse.SUPPRESS)
    ap.add_argument("--sides", default="hf,vllm", help=f"comma list of {','.join(SIDES)}")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (after 1 warm-up)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--model", default="tiny-policy", help="zoo name")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    args = ap.parse_args()
    work = Work(steps=args.steps, max_new_tokens=args.max_new_tokens, model=args.model)
    if args.worker:
        if args.engine == "trl-vllm":
            from _trl_vllm import trl_vllm_worker

            with tempfile.TemporaryDirectory() as out_dir:
                emit(trl_vllm_worker(work, out_dir))
        else:
            emit(worker(work, args.engine))
        return
    # workers: one bound core for vLLM's CPU worker, the default zoo cache, a small KV cache
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from nudgekit.config import cache_root

    os.environ.setdefault("NUDGEKIT_CACHE", str(cache_root()))
    common = [
        "--steps",
        str(args.steps),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--model",
        args.model,
    ]
    sides = {name: ["--engine", name, *common] for name in args.sides.split(",")}
    runs = alternate(SCRIPT, sides, args.rounds)
    summary = {name: summarise(r, KEYS) for name, r in runs.items()}
    ratios = paired_ratios(runs["vllm"], runs["hf"]) if {"vllm", "hf"} <= set(runs) else []
    rows = [
        {"side": name, **{k: summary[name][k] for k in (*KEYS, "peak_rss_mb")}} for name in sides
    ]
    print(table(rows))
    print(f"vllm / hf step time, per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    trl = paired_ratios(runs["vllm"], runs["trl-vllm"]) if {"vllm", "trl-vllm"} <= set(runs) else []
    if trl:
        print(f"vllm / trl-vllm step time, per round: {', '.join(f'{r:.2f}' for r in trl)}")
    import vllm

    name = "grpo_vllm" + (f"_{args.tag}" if args.tag else "")
    path = write_json(
        name,
        work,
        {
            "vllm": vllm.__version__,
            "summary": summary,
            "ratio_vllm_over_hf_rounds": ratios,
            "ratio_vllm_over_trl_vllm_rounds": trl,
            "runs": runs,
            "work_args": asdict(work),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
