"""torchrun worker for the DeepSpeed equivalence test: train a tiny GRPO run, save final weights.

    DS_ACCELERATOR=cpu torchrun --nproc_per_node=2 tests/helpers/rl/train_worker.py \
        MODEL_DIR RUN_DIR OUT.pt --stage 2 [--steps 2]

Rank 0 writes the full final weights to OUT.pt (gathered under ZeRO-3).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.helpers.rl.build import equivalence_kwargs, make_trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--stage", type=int, default=0, help="0: plain torch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    backend = [f"trainer/deepspeed=zero{args.stage}"] if args.stage else []  # 0: the torch default
    if args.stage == 3:
        # persistence threshold 0: even tiny tensors are partitioned, so generation must gather
        backend.append(
            "+trainer.deepspeed.config.zero_optimization.stage3_param_persistence_threshold=0"
        )
    trainer = make_trainer(args.model_dir, *backend, **equivalence_kwargs())
    trainer.setup(args.run_dir)
    metrics = trainer.train()
    state = trainer.backend.full_state_dict()
    if trainer.backend.is_main:
        torch.save({"state": state, "metrics": metrics}, args.out)
    trainer.cleanup()


if __name__ == "__main__":
    main()
