"""Atomic, verified, resumable training checkpoints and plain-HF export.

A checkpoint is a directory `step-000042/` holding:

```
trainer_state.json   step, data position, plateau state, the run config, extra_state (NuRL:
                     stage, filtered problem ids)
rng-rank<r>.pt       python / numpy / torch RNG states of rank r
torch_state.pt       model + optimizer + scheduler (torch backend), or
deepspeed/           DeepSpeed's own per-rank files (ZeRO backends)
hints.jsonl, ...     files the trainer adds (`save(files=...)`; NuRL: its hint store)
manifest.json        size + sha256 of every other file (`manifest`), written last
```

A weights-only checkpoint (`weights_only=True`, for export and evaluation) holds
`trainer_state.json` (with `"weights_only": true`), the trainer's files, `model/` (a plain HF
checkpoint: `from_pretrained(step-N/model)`) and the manifest, and no optimizer, scheduler or
RNG state: resuming from one is refused in one line. `keep` prunes to the newest k.

Every rank writes into `.tmp-step-000042/`; after a barrier rank 0 writes `trainer_state.json`,
then the manifest, and renames the temp dir into place, so a directory named `step-*` is always
complete: a process killed mid-write leaves only a `.tmp-*` dir, which the next save of that
step replaces. Directories are deleted (pruned, or replaced by a new save of the same step) by
renaming them to `.trash-*` first, so a killed deletion never leaves a half-deleted `step-*`.

`resolve()` verifies a checkpoint against its manifest before anything is loaded (DeepSpeed
unpickles its files). `resume="auto"` takes the newest checkpoint that verifies, skipping broken
ones with a one-line warning each (and refuses when there are checkpoints but none verifies); an
explicit path that fails verification is a one-line error; None never resumes. Checkpoints
written before manifests existed load with a warning when they hold only `weights_only` torch
files (nothing in them can run code), and are refused when they hold DeepSpeed state.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nudgekit.errors import NudgekitError
from nudgekit.rl.manifest import MANIFEST, verify, write_manifest

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
WEIGHTS_DIR = "model"  # a weights-only checkpoint's HF model directory
_LEGACY_FILES = ("torch_state.pt", "rng-rank0.pt")  # what a torch-backend checkpoint must hold
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
    """Save, find, verify and load checkpoints under one directory.

    Args:
        directory: where `step-*` directories live.
        keep: how many most recent checkpoints to keep (None: all).
        weights_only: write only the policy weights (not resumable; see the module docstring).
    """

    def __init__(
        self, directory: str | os.PathLike, keep: int | None = 2, weights_only: bool = False
    ) -> None:
        self.directory = Path(directory)
        self.keep, self.weights_only = keep, weights_only
        self._verified: set[Path] = set()

    def path(self, step: int) -> Path:
        return self.directory / f"step-{step:06d}"

    def candidates(self) -> list[Path]:
        """Every `step-*` directory, oldest first (complete or not)."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if (m := _NAME.match(p.name)) and p.is_dir()
        ]
        return [p for _, p in sorted(found)]

    def complete(self) -> list[Path]:
        """Checkpoints that finished writing (a manifest, or an older one's state file)."""
        return [
            p for p in self.candidates() if (p / MANIFEST).is_file() or (p / STATE_FILE).is_file()
        ]

    def check(self, path: Path) -> str | None:
        """Why `path` must not be loaded, or None (verified, or an older torch-only checkpoint).

        Logs a warning for an older checkpoint without a manifest that is loaded unverified.
        """
        if (path / MANIFEST).is_file():
            problem = verify(path) or _not_resumable(path)
            if problem is None:
                self._verified.add(path.resolve())
            return problem
        if not (path / STATE_FILE).is_file():
            return f"incomplete (no {MANIFEST})"
        if (path / "deepspeed").exists():
            return (
                f"no {MANIFEST} to verify its DeepSpeed state against (DeepSpeed unpickles "
                "it, so it is only loaded verified)"
            )
        missing = [name for name in _LEGACY_FILES if not (path / name).is_file()]
        if missing:  # e.g. half deleted by an older nudgekit's prune
            return f"{missing[0]}: missing (and no {MANIFEST})"
        log.warning(
            "resume: %s has no %s (written before checkpoints were checksummed); "
            "loading it unverified",
            path,
            MANIFEST,
        )
        self._verified.add(path.resolve())
        return None

    def latest(self) -> Path | None:
        """The newest checkpoint that verifies; broken newer ones are skipped with a warning.

        Raises:
            NudgekitError: there are `step-*` directories but none of them verifies.
        """
        failed = []
        for path in reversed(self.candidates()):
            problem = self.check(path)
            if problem is None:
                if failed:
                    log.warning(
                        "resume=auto: falling back to %s, the newest intact checkpoint", path
                    )
                return path
            log.warning("resume=auto: skipping %s (%s)", path, problem)
            failed.append(f"{path.name}: {problem}")
        if failed:
            raise NudgekitError(
                f"resume=auto: no intact checkpoint in {self.directory} ({'; '.join(failed)}); "
                "move them away, or start fresh with resume=null"
            )
        return None

    def resolve(self, resume: str | os.PathLike | None, backend: Any = None) -> Path | None:
        """The checkpoint to resume from, verified: None, "auto" (newest intact) or a path.

        Args:
            resume: None/"null" (no resume), "auto", or a checkpoint directory.
            backend: when given, rank 0 verifies and broadcasts its choice (or its error) to
                the other ranks, so the files are hashed once and every rank agrees.

        Raises:
            NudgekitError: an explicit path that is not a verified checkpoint, or "auto" with
                checkpoints none of which verifies (one line).
        """
        if resume in (None, "", "null", "none", False):
            return None
        outcome = self._choose(resume) if backend is None or backend.is_main else None
        if backend is not None:
            outcome = backend.broadcast_object(outcome)
        kind, value = outcome
        if kind == "error":
            raise NudgekitError(value)
        if value is None:
            return None
        path = Path(value)
        self._verified.add(path.resolve())
        return path

    def _choose(self, resume: str | os.PathLike) -> tuple[str, str | None]:
        try:
            if str(resume) == "auto":
                found = self.latest()
                return "path", str(found) if found is not None else None
            path = Path(resume)
            if not (path / MANIFEST).is_file() and not (path / STATE_FILE).is_file():
                raise NudgekitError(f"resume: {path} is not a complete checkpoint (no {MANIFEST})")
            problem = self.check(path)
            if problem is not None and problem == _not_resumable(path):
                raise NudgekitError(f"resume: {path} is {problem}; set resume=null to start fresh")
            if problem is not None:
                raise NudgekitError(f"resume: {path} failed verification: {problem}; not loaded")
            return "path", str(path)
        except NudgekitError as err:
            return "error", str(err)

    def save(
        self,
        step: int,
        backend: Any,
        state: dict[str, Any],
        files: dict[str, Callable[[Path], Any]] | None = None,
        tokenizer: Any = None,
    ) -> Path:
        """Write checkpoint `step` atomically; every rank must call this.

        Args:
            step: the optimizer step the checkpoint ends (training resumes with `step`).
            backend: the training backend (writes model/optimizer/scheduler).
            state: the JSON-able trainer state (rank 0's is written).
            files: `{name: write(path)}` of extra files rank 0 writes beside the state (they
                are in the manifest like every other file).
            tokenizer: saved with the weights of a weights-only checkpoint.

        Returns:
            The checkpoint directory.
        """
        final, tmp = self.path(step), self.directory / f".tmp-step-{step:06d}"
        if backend.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a killed save
            tmp.mkdir(parents=True)
        backend.barrier()
        if self.weights_only:
            backend.export(tmp / WEIGHTS_DIR, tokenizer)  # collective under ZeRO-3
            state = {**state, "weights_only": True}
        else:
            backend.save(tmp)
            torch.save(rng_state(), tmp / f"rng-rank{backend.rank}.pt")
        backend.barrier()
        if backend.is_main:
            for name, write in (files or {}).items():
                write(tmp / name)
            _write_json(tmp / STATE_FILE, {"step": step, "world_size": backend.world_size, **state})
            write_manifest(tmp, step=step)
            self._discard(final)
            os.replace(tmp, final)
            _fsync_dir(self.directory)
            self.prune()
        backend.barrier()
        return final

    def read_state(self, path: Path) -> dict[str, Any]:
        """The trainer state of a checkpoint (call `resolve` first: it verifies the file)."""
        return json.loads((Path(path) / STATE_FILE).read_text())

    def load(self, path: Path, backend: Any) -> dict[str, Any]:
        """Restore backend state and this rank's RNG; returns the trainer state.

        A path that `resolve` did not return is verified first (nothing unverified is loaded).
        """
        path = Path(path)
        if path.resolve() not in self._verified:
            problem = self.check(path)
            if problem is not None:
                raise NudgekitError(f"resume: {path} failed verification: {problem}; not loaded")
        state = self.read_state(path)
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
        """Delete all but the newest `keep` checkpoints (and leftovers of killed deletions)."""
        for trash in self.directory.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)
        if self.keep is None:
            return
        for old in self.complete()[: -self.keep]:
            self._discard(old)

    def _discard(self, path: Path) -> None:
        """Delete a checkpoint dir: renamed away first, so no half-deleted `step-*` remains."""
        if not path.exists():
            return
        trash = path.parent / f".trash-{path.name}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(path, trash)
        _fsync_dir(path.parent)
        shutil.rmtree(trash, ignore_errors=True)


def _not_resumable(path: Path) -> str | None:
    """Why a verified checkpoint cannot be resumed (weights-only), or None."""
    try:
        weights_only = json.loads((path / STATE_FILE).read_text()).get("weights_only")
    except (OSError, ValueError, AttributeError):
        return None  # verification reports a broken state file
    if not weights_only:
        return None
    return (
        "a weights-only checkpoint (pipeline.checkpoint.weights_only=true): no optimizer, "
        f"scheduler or RNG state to resume from; its weights load from {path / WEIGHTS_DIR}"
    )


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
