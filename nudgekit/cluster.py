"""SLURM and submitit tasks as torch-distributed ranks.

A `hydra/launcher=submitit_slurm` job runs one process per task (`srun`); SLURM numbers them
(`SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NTASKS`, `SLURM_JOB_NODELIST`) while torch's env://
rendezvous and `nudgekit.rl.dist` read `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR` and
`MASTER_PORT`. `job_torch_env` maps one to the other (pure; tested on hand-built env dicts, no
`scontrol`), and `ExportTorchEnv`, a Hydra callback the submitit launcher presets add, sets the
result in each task's environment at job start, before the run dir is locked by rank 0 and before
`nudgekit.rl.dist.setup_process` decides the rank and device. Torch-free, so it loads fast in
every task.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hydra.experimental.callback import Callback

TORCHRUN_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
SLURM_TASK_KEYS = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS")
SUBMITIT_LOCAL_KEYS = ("SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_LOCALID", "SUBMITIT_LOCAL_NTASKS")
PORT_RANGE = (20000, 40000)


def expand_nodelist(nodelist: str) -> list[str]:
    """Host names of a SLURM node list, in order (pure; no `scontrol`).

    "gpu[01-02],cpu5" -> ["gpu01", "gpu02", "cpu5"]; "a[1-2]-ib[3,5]" -> ["a1-ib3", "a1-ib5", ...].
    Ranges keep the zero padding of their lower bound.
    """
    hosts: list[str] = []
    i, n = 0, len(nodelist)
    while i < n:
        names = [""]
        while i < n and nodelist[i] != ",":
            if nodelist[i] == "[":
                end = nodelist.index("]", i)
                names = [a + b for a in names for b in _expand_ranges(nodelist[i + 1 : end])]
                i = end + 1
            else:
                names = [a + nodelist[i] for a in names]
                i += 1
        hosts.extend(x for x in names if x)
        i += 1  # the comma between groups
    return hosts


def _expand_ranges(spec: str) -> list[str]:
    """ "1-3,07" -> ["1", "2", "3", "07"] (zero padding from each range's lower bound)."""
    out: list[str] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        if not high:
            out.append(low)
            continue
        out.extend(f"{k:0{len(low)}d}" for k in range(int(low), int(high) + 1))
    return out


def job_port(job_id: str) -> int:
    """A rendezvous port every task of one job agrees on, from the job id (pure)."""
    lo, hi = PORT_RANGE
    digits = "".join(c for c in str(job_id) if c.isdigit()) or "0"
    return lo + int(digits) % (hi - lo)


def slurm_torch_env(env: Mapping[str, str]) -> dict[str, str]:
    """torch-distributed variables for one `srun` task, from SLURM's (pure).

    RANK <- SLURM_PROCID, LOCAL_RANK <- SLURM_LOCALID, WORLD_SIZE <- SLURM_NTASKS,
    LOCAL_WORLD_SIZE <- SLURM_NTASKS / SLURM_JOB_NUM_NODES, MASTER_ADDR <- the first host of
    SLURM_JOB_NODELIST (or SLURM_NODELIST), MASTER_PORT <- `job_port(SLURM_JOB_ID)`.
    Returns `{}` outside an `srun` task or under torchrun (its variables win); otherwise only the
    keys `env` lacks, so an exported MASTER_PORT is kept.
    """
    if _torchrun(env) or not all(k in env for k in SLURM_TASK_KEYS):
        return {}
    nodes = max(int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", "1"))), 1)
    hosts = expand_nodelist(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "")))
    return _absent(
        env,
        rank=env["SLURM_PROCID"],
        local_rank=env["SLURM_LOCALID"],
        world_size=env["SLURM_NTASKS"],
        local_world_size=str(int(env["SLURM_NTASKS"]) // nodes),
        master_addr=hosts[0] if hosts else "127.0.0.1",
        master_port=str(job_port(env.get("SLURM_JOB_ID", "0"))),
    )


def submitit_local_torch_env(env: Mapping[str, str]) -> dict[str, str]:
    """The same for a task of submitit's local executor (one machine; pure)."""
    if _torchrun(env) or not all(k in env for k in SUBMITIT_LOCAL_KEYS):
        return {}
    return _absent(
        env,
        rank=env["SUBMITIT_LOCAL_GLOBALID"],
        local_rank=env["SUBMITIT_LOCAL_LOCALID"],
        world_size=env["SUBMITIT_LOCAL_NTASKS"],
        local_world_size=env["SUBMITIT_LOCAL_NTASKS"],
        master_addr="127.0.0.1",
        master_port=str(job_port(env.get("SUBMITIT_LOCAL_JOB_ID", "0"))),
    )


def job_torch_env(env: Mapping[str, str]) -> dict[str, str]:
    """torch-distributed variables for a SLURM or submitit-local task; `{}` for anything else."""
    return slurm_torch_env(env) or submitit_local_torch_env(env)


def _absent(env: Mapping[str, str], **values: str) -> dict[str, str]:
    return {k.upper(): v for k, v in values.items() if k.upper() not in env}


class ExportTorchEnv(Callback):
    """Hydra callback (conf/hydra/launcher/callbacks/torch_env.yaml): each task a torch rank.

    On job start, in the task's own process, it sets `job_torch_env(os.environ)` in the
    environment, before the task function decides its rank (`setup_process`).
    """

    def on_job_start(self, config: Any = None, **kwargs: Any) -> None:
        os.environ.update(job_torch_env(os.environ))


def _torchrun(env: Mapping[str, str]) -> bool:
    return all(k in env for k in TORCHRUN_KEYS)
