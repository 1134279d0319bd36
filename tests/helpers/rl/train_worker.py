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

from nudgekit.rl import DeepSpeedBackend, TorchBackend  # noqa: E402
from tests.helpers.rl.build import equivalence_kwargs, make_trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--stage", type=int, default=0, help="0: plain torch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.stage:
        # persistence threshold 0: even tiny tensors are partitioned, so generation must gather
        extra = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}
        backend = DeepSpeedBackend(args.stage, config=extra if args.stage == 3 else None)
    else:
        backend = TorchBackend()
    trainer = make_trainer(args.model_dir, backend=backend, **equivalence_kwargs())
    trainer.setup(args.run_dir)
    metrics = trainer.train()
    state = trainer.backend.full_state_dict()
    if trainer.backend.is_main:
        torch.save({"state": state, "metrics": metrics}, args.out)
    trainer.cleanup()


if __name__ == "__main__":
    main()
