"""One-process DeepSpeed worker for the planted-pickle probe (`test_reliability_checkpoints`).

    DS_ACCELERATOR=cpu RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=<port> \
        python tests/helpers/rl/ds_planted_worker.py MODEL_DIR RUN_DIR MARKER

Trains one GRPO step under ZeRO-2 (world size 1) and checkpoints it, replaces DeepSpeed's
model-states file with a pickle whose `__reduce__` creates MARKER (as an attacker with write
access to the checkpoint would), then resumes from that checkpoint twice (explicit path and
`resume=auto`). Before planting, it resumes the intact checkpoint once with a new, allowed lr.
Prints JSON lines: `{"step": ..., "lr": ...}` for that resume, then one
`{"resume": ..., "error": ..., "type": ...}` per attempt (error None when it succeeded).
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.helpers.rl.build import make_trainer  # noqa: E402

NEW_LR = 1e-3  # the checkpoint was trained with 3e-3
ZERO2 = "trainer/deepspeed=zero2"


class Planted:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('planted pickle ran')",)


def plant(checkpoint: Path, marker: Path) -> Path:
    """Overwrite DeepSpeed's model-states file of `checkpoint` with the planted pickle.

    The pickle is padded to the original file's size, so only the hash can tell them apart
    (`torch.load` reads a non-zip file as a legacy pickle and stops at its STOP opcode).
    """
    target = checkpoint / "deepspeed" / "mp_rank_00_model_states.pt"
    payload = pickle.dumps(Planted(str(marker)))
    size = target.stat().st_size
    assert len(payload) < size
    target.write_bytes(payload + b"\0" * (size - len(payload)))
    return target


def attempt(model_dir: str, run_dir: str, resume: str) -> dict:
    trainer = make_trainer(model_dir, ZERO2, max_steps=1, resume=resume)
    try:
        trainer.setup(run_dir)
        return {"resume": resume, "error": None, "type": None}
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever came out
        return {"resume": resume, "error": str(exc), "type": type(exc).__name__}


def main() -> None:
    model_dir, run_dir, marker = sys.argv[1:4]
    torch.set_num_threads(1)
    trainer = make_trainer(model_dir, ZERO2, max_steps=1)
    trainer.setup(run_dir)
    trainer.train()
    trainer.cleanup()
    checkpoint = Path(run_dir) / "checkpoints" / "step-000001"
    # an intact checkpoint resumes, and an allowed new lr is what DeepSpeed's optimizer uses
    resumed = make_trainer(
        model_dir,
        ZERO2,
        f"pipeline.optimizer.lr={NEW_LR}",
        max_steps=1,
        resume="auto",
        resume_allow=["optimizer.lr"],
    )
    resumed.setup(run_dir)
    print(json.dumps({"step": resumed.step, "lr": resumed.backend.lr()}), flush=True)
    resumed.cleanup()
    plant(checkpoint, Path(marker))
    for resume in (str(checkpoint), "auto"):
        print(json.dumps(attempt(model_dir, run_dir, resume)), flush=True)


if __name__ == "__main__":
    main()
