"""One-process DeepSpeed ZeRO-2 worker for the bf16 probe (`tests/test_rl_memory.py`).

    DS_ACCELERATOR=cpu RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=<port> \
        python tests/helpers/rl/bf16_worker.py MODEL_DIR RUN_DIR

Loads the policy in bf16, trains one GRPO step under ZeRO-2 and prints one JSON line: whether
DeepSpeed's bf16 is on, the dtypes of the module's and the optimizer's (master) weights, how far
the weights moved and whether the loss was finite.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.helpers.rl.build import make_trainer  # noqa: E402


def main() -> None:
    model_dir, run_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    trainer = make_trainer(
        model_dir, "model.dtype=bfloat16", "trainer/deepspeed=zero2", max_steps=1
    )
    trainer.setup(run_dir)
    engine = trainer.backend.engine
    before = {k: v.float().clone() for k, v in engine.module.state_dict().items()}
    metrics = trainer.train_step()
    after = engine.module.state_dict()
    master = engine.optimizer.single_partition_of_fp32_groups[0]
    print(
        json.dumps(
            {
                "bf16_enabled": bool(engine.bfloat16_enabled()),
                "param_dtype": str(next(engine.module.parameters()).dtype),
                "master_dtype": str(master.dtype),
                "moved": max((after[k].float() - before[k]).abs().max().item() for k in before),
                "loss_finite": math.isfinite(metrics["train/loss"]),
            }
        )
    )
    trainer.cleanup()


if __name__ == "__main__":
    main()
