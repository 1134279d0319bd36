"""One run per run directory: an exclusive lock on ``<run_dir>/.lock`` held for the whole run.

Without it two runs pointed at one ``hydra.run.dir`` both append to ``metrics.jsonl`` and both
exit 0, and a second GRPO run "resumes" the first one's live checkpoint. The lock is a
``fcntl.flock`` on an open file: the kernel drops it when the process exits however it exits
(SIGKILL and OOM included), so a dead run never leaves a stale lock; the pid written into the
file is only a hint for the error message. The file itself is left in place, because deleting a
lock file while another process may be opening it lets two processes lock two different files.

Under ``torchrun`` all ranks share one run dir, so only global rank 0 (env ``RANK``) locks;
other ranks are never locked out by their own rank 0. Locking is re-entrant within a process:
the Hydra callback takes the lock before Hydra writes its files, and `cli.run` takes it again
(a no-op then; the in-process path for tests and notebooks).

POSIX only (``fcntl``); elsewhere locking is skipped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from nudgekit.errors import NudgekitError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_held: dict[str, int] = {}  # real path of a run dir -> the open, locked file descriptor


def is_main_process() -> bool:
    """Whether this is global rank 0 (or not under ``torchrun`` at all)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def lock_run_dir(run_dir: str | os.PathLike) -> bool:
    """Take the exclusive lock on a run directory (created if missing) for this process.

    Args:
        run_dir: the run directory.

    Returns:
        True when this call took the lock; False when this process already held it, when this
        is not rank 0, or on a platform without ``fcntl``.

    Raises:
        NudgekitError: another live process holds the lock (one line naming the dir and pid).
    """
    if fcntl is None or not is_main_process():
        return False
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    if key in _held:
        return False
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_pid(fd)
        os.close(fd)
        raise NudgekitError(
            f"{path}: run dir is locked by another run (pid {holder}); wait for it to finish or "
            "choose another hydra.run.dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd
    return True


def unlock_run_dir(run_dir: str | os.PathLike) -> None:
    """Release this process's lock on a run directory (no-op when it holds none).

    Args:
        run_dir: the run directory.
    """
    fd = _held.pop(os.path.realpath(Path(run_dir)), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


@contextlib.contextmanager
def locked_run_dir(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the run-dir lock for the ``with`` body (released only if this call took it).

    Args:
        run_dir: the run directory.

    Raises:
        NudgekitError: another run holds the lock.
    """
    took = lock_run_dir(run_dir)
    try:
        yield
    finally:
        if took:
            unlock_run_dir(run_dir)


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
    return "unknown"
