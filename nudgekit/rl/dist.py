"""Process and device discipline: rank, local rank, world size and device, decided once.

Every training process calls `setup_process` before anything loads. It reads the torchrun
environment (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`); a process started without it is rank 0 of a
world of one. The device is `cuda:LOCAL_RANK` when CUDA is there and the config asks for cuda
(or "auto"), else the CPU, and on CUDA `torch.cuda.set_device(LOCAL_RANK)` makes every later
collective and allocation use the rank's own GPU (not cuda:0).

`single_process_env` fills the rendezvous variables a plain `python run.py ...` lacks, so
DeepSpeed's `init_distributed` builds a world of one from the environment instead of falling into
its MPI discovery. The decisions are pure functions over an env mapping (tested on hand-built
dicts); only `setup_process` and `free_port` touch the machine.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch

TORCHRUN_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process sits in the run.

    Args:
        rank: global rank.
        local_rank: rank on this machine (the GPU index on CUDA).
        world_size: number of processes.
        device: torch device string the models load on ("cpu", "cuda:3").
        launched: the torchrun environment was present.
    """

    rank: int
    local_rank: int
    world_size: int
    device: str
    launched: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched(env: Mapping[str, str]) -> bool:
    """True when `env` holds torchrun's rank variables."""
    return all(k in env for k in TORCHRUN_KEYS)


def ranks(env: Mapping[str, str]) -> tuple[int, int, int]:
    """`(rank, local_rank, world_size)` from a torchrun env; `(0, 0, 1)` without one."""
    if not launched(env):
        return 0, 0, 1
    return int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"])


def choose_device(want: str, local_rank: int, cuda_available: bool, world_size: int = 1) -> str:
    """The device a rank's models load on.

    Args:
        want: the config's device: "cpu", "auto", "cuda" or "cuda:N".
        local_rank: this process's rank on the machine.
        cuda_available: whether CUDA is usable here.
        world_size: processes in the run; with more than one, "cuda:N" means "this rank's GPU".

    Returns:
        "cuda:<local_rank>" for "auto"/"cuda" with CUDA (and "cuda:N" under a multi-process
        launch), "cpu" for "cpu" or "auto" without CUDA; anything else as given ("cuda" without
        CUDA stays "cuda", so the model loader's one-line error names it).
    """
    want = str(want or "auto").strip()
    if want == "auto":
        return f"cuda:{local_rank}" if cuda_available else "cpu"
    if want == "cuda" or (want.startswith("cuda:") and world_size > 1):
        return f"cuda:{local_rank}" if cuda_available else want
    return want


def process_info(env: Mapping[str, str], want: str, cuda_available: bool) -> ProcessInfo:
    """Rank, local rank, world size and device from an env mapping (pure)."""
    rank, local_rank, world = ranks(env)
    device = choose_device(want, local_rank, cuda_available, world)
    return ProcessInfo(rank, local_rank, world, device, launched(env))


def single_process_env(env: Mapping[str, str], port: int) -> dict[str, str]:
    """The rendezvous variables a world-of-one process needs and `env` lacks (pure).

    Only absent keys are returned, so a torchrun (or SLURM-exported) environment is never
    overridden; a complete one gives `{}`.
    """
    defaults = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    if launched(env):  # torchrun: only the address/port could be missing (never, in practice)
        defaults = {k: v for k, v in defaults.items() if k.startswith("MASTER_")}
    return {k: v for k, v in defaults.items() if k not in env}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill_single_process_env(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the absent rendezvous variables in `env` (default `os.environ`); returns what was set."""
    env = os.environ if env is None else env
    added = single_process_env(env, free_port() if "MASTER_PORT" not in env else 0)
    env.update(added)
    return added


def setup_process(want: str = "auto", env: Mapping[str, str] | None = None) -> ProcessInfo:
    """Decide this process's place and device once, and pin CUDA to the rank's GPU.

    Args:
        want: the config's device ("cpu", "auto", "cuda", "cuda:N").
        env: the environment (default `os.environ`).

    Returns:
        The `ProcessInfo`; on CUDA, `torch.cuda.set_device(local_rank)` has been called.
    """
    info = process_info(os.environ if env is None else env, want, torch.cuda.is_available())
    if info.device.startswith("cuda:") and torch.cuda.is_available():
        torch.cuda.set_device(torch.device(info.device))
    return info


def on_device(spec: Any, device: str) -> Any:
    """`spec` (a `ModelSpec`-like dataclass with a `device` field) moved to `device`.

    Anything without a `device` dataclass field is returned unchanged.
    """
    fields = {f.name for f in dataclasses.fields(spec)} if dataclasses.is_dataclass(spec) else ()
    if "device" not in fields or getattr(spec, "device", None) == device:
        return spec
    return dataclasses.replace(spec, device=device)
