"""A prune killed half-way: save two checkpoints with `keep=1`, SIGKILL at the first file deletion.

    python tests/helpers/rl/killed_prune.py CHECKPOINT_DIR

The second save prunes `step-000001`; an audit hook (`sys.addaudithook`) arms when
`shutil.rmtree` starts on a path naming that checkpoint and kills this process with SIGKILL at
the next file removal, so the deletion stops after zero files, deterministically.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from nudgekit.rl import CheckpointManager, TorchBackend  # noqa: E402

VICTIM = "step-000001"


def kill_at_first_deletion(event: str, args: tuple) -> None:
    """Audit hook: arm on `shutil.rmtree(<victim>)`, SIGKILL on the next `os.remove`."""
    if event == "shutil.rmtree" and VICTIM in str(args[0]):
        kill_at_first_deletion.armed = True
    elif event == "os.remove" and getattr(kill_at_first_deletion, "armed", False):
        os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    directory = Path(sys.argv[1])
    backend = TorchBackend()
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3)
    backend.setup(torch.nn.Linear(16, 16), optimizer, None, grad_accum_steps=1, micro_batch_size=1)
    manager = CheckpointManager(directory, keep=1)
    manager.save(1, backend, {"sampler": {"epoch": 0, "index": 1}})
    sys.addaudithook(kill_at_first_deletion)
    manager.save(2, backend, {"sampler": {"epoch": 0, "index": 2}})  # prunes step-000001
    print("not killed")


if __name__ == "__main__":
    main()
