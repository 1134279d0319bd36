"""Atomic, resumable training checkpoints and plain-HF export.

A checkpoint is a directory `step-000042/` holding:

```
trainer_state.json   step, data position, plateau state, extra_state (NuRL: stage, hint store)
rng-rank<r>.pt       python / numpy / torch RNG states of rank r
torch_state.pt       model + optimizer + scheduler (torch backend), or
deepspeed/           DeepSpeed's own per-rank files (ZeRO backends)
```

Every rank writes into `.tmp-step-000042/`; after a barrier rank 0 writes `trainer_state.json`
last and renames the temp dir into place, so a directory named `step-*` is always complete: a
process killed mid-write leaves only a `.tmp-*` dir, which the next save of that step replaces and
`latest()` never returns. `resume="auto"` picks the newest complete checkpoint (or starts fresh),
a path resumes from exactly that checkpoint, None never resumes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nudgekit.errors import NudgekitError

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU, and CUDA when present) RNG states, `weights_only`-safe."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class CheckpointManager:
    """Save, find and load checkpoints under one directory.

    Args:
        directory: where `step-*` directories live.
        keep: how many most recent checkpoints to keep (None: all).
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.directory / f"step-{step:06d}"

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()
        ]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def resolve(self, resume: str | os.PathLike | None) -> Path | None:
        """The checkpoint to resume from: None, "auto" (newest or None) or an explicit path."""
        if resume in (None, "", "null", "none", False):
            return None
        if str(resume) == "auto":
            return self.latest()
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise NudgekitError(f"resume: {path} is not a complete checkpoint (no {STATE_FILE})")
        return path

    def save(self, step: int, backend: Any, state: dict[str, Any]) -> Path:
        """Write checkpoint `step` atomically; every rank must call this.

        Args:
            step: the optimizer step the checkpoint ends (training resumes with `step`).
            backend: the training backend (writes model/optimizer/scheduler).
            state: the JSON-able trainer state (rank 0's is written).
        """
        final, tmp = self.path(step), self.directory / f".tmp-step-{step:06d}"
        if backend.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a killed save
            tmp.mkdir(parents=True)
        backend.barrier()
        backend.save(tmp)
        torch.save(rng_state(), tmp / f"rng-rank{backend.rank}.pt")
        backend.barrier()
        if backend.is_main:
            _write_json(tmp / STATE_FILE, {"step": step, "world_size": backend.world_size, **state})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.directory)
            self.prune()
        backend.barrier()
        return final

    def load(self, path: Path, backend: Any) -> dict[str, Any]:
        """Restore backend state and this rank's RNG; returns the trainer state."""
        state = json.loads((path / STATE_FILE).read_text())
        if state.get("world_size", 1) != backend.world_size:
            raise NudgekitError(
                f"resume: {path} was written by {state.get('world_size')} processes, "
                f"this run has {backend.world_size}"
            )
        backend.load(path)
        rng = path / f"rng-rank{backend.rank}.pt"
        set_rng_state(torch.load(rng, weights_only=True))
        return state

    def prune(self) -> None:
        if self.keep is None:
            return
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


def export_hf(backend: Any, tokenizer: Any, directory: str | os.PathLike) -> Path:
    """Export the policy as a plain HF checkpoint (temp dir + rename); every rank must call.

    The result loads with `AutoModelForCausalLM.from_pretrained` (and so with vLLM).
    """
    final = Path(directory)
    tmp = final.parent / f".tmp-{final.name}"
    if backend.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    backend.barrier()
    backend.export(tmp, tokenizer)
    backend.barrier()
    if backend.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    backend.barrier()
    return final


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
