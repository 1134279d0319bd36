"""Launch a test worker script under `torchrun` (gloo, DeepSpeed's CPU accelerator)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nudgekit.rl.dist import free_port  # re-exported: the tests' one free-port helper

ROOT = Path(__file__).resolve().parents[2]


def cpu_env(*paths: Path, **extra: str) -> dict[str, str]:
    """This process's environment plus DS_ACCELERATOR=cpu, one OpenMP thread and PYTHONPATH =
    the repository root followed by `paths`."""
    pythonpath = ":".join(str(p) for p in (ROOT, *paths))
    return {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": pythonpath,
        **extra,
    }


def torchrun(
    script: str | Path, *args: object, nproc: int = 2, timeout: int = 400, paths: tuple = ()
) -> subprocess.CompletedProcess:
    """Run `script args...` as `nproc` ranks; assert it exited 0 (the tails of its output if not)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        str(script),
        *(str(a) for a in args),
    ]
    env = cpu_env(*paths)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
