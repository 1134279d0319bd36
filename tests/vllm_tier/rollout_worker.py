"""torchrun worker of the vLLM tier: GRPO with vLLM rollouts under DeepSpeed ZeRO-3 (gloo).

    DS_ACCELERATOR=cpu torchrun --nproc_per_node=2 tests/vllm_tier/rollout_worker.py \
        MODEL_DIR RUN_DIR OUT.json [--steps 3]

After setup and after every step, each rank compares its own vLLM engine with the trainer's
(gathered) module (`weight_gap`); rank 0 writes every rank's results to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.rl.build import make_trainer  # noqa: E402
from vllm_tier.rollout_helpers import probe_prompts, vllm_engine_factory, weight_gap  # noqa: E402

from nudgekit.rl import DeepSpeedBackend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}
    trainer = make_trainer(
        args.model_dir,
        backend=DeepSpeedBackend(3, config=extra),
        engine=vllm_engine_factory(Path(args.model_dir)),
        max_steps=args.steps,
        val_every=1,
    )
    trainer.setup(args.run_dir)
    prompts = probe_prompts(trainer)
    checks = [weight_gap(trainer, prompts)]
    for _ in range(args.steps):
        metrics = trainer.train_step()
        checks.append({**weight_gap(trainer, prompts), "metrics": metrics})
    final = trainer.train()  # validation at the end (vLLM) and the final checkpoint
    mine = {
        "rank": trainer.backend.rank,
        "checks": checks,
        "final": final,
        "pushes": trainer.engine.pushes,
    }
    gathered = trainer.backend.all_gather_object(mine)
    if trainer.backend.is_main:
        Path(args.out).write_text(json.dumps(gathered))
    trainer.cleanup()


if __name__ == "__main__":
    main()
