"""A small pool of verifier worker processes with a hard per-call timeout.

A Python thread cannot be stopped, and a SIGALRM timeout only works in the main thread and only
between bytecodes, so a verifier stuck in C code (a regex, a huge sympy integer) or called from a
worker thread used to run on in the background. Here each call runs in a persistent worker
process; a call that outlives ``timeout_s + grace_s`` gets its worker killed (and replaced), and
scores 0 as a timeout. Inside the worker the SIGALRM guard still stops ordinary runaway Python
code at ``timeout_s`` without losing the process.

Workers are fresh interpreters (``python -m nudgekit.rewards._worker``, the equivalent of a
``spawn`` start) rather than forks: the parent has torch and its threads loaded, and a fresh
interpreter also does not re-import the parent's ``__main__`` (a Hydra script) as
``multiprocessing``'s spawn would. A worker imports only ``nudgekit.rewards`` and the verifier's
module, once.

Calls are sent in batches (chunks of a batch go to whichever worker is free), and each worker
reports progress at least every 20 ms, which is how the parent knows when the running call
started. `get_pool` gives the process-wide pool; a forked child builds its own.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from nudgekit.rewards._worker import OUTCOMES, RECORD

RawVerifier = object  # a picklable (completion, answer) -> float callable
Outcome = tuple[float, str, float]  # (score, "ok" | "failure" | "timeout", seconds)

STARTUP_S = 120.0  # a fresh worker's start and its verifier's import (sympy on a busy box)


@dataclass(eq=False)
class _Worker:
    """One worker process and its pipes, with the chunk it is running."""

    proc: subprocess.Popen
    send: Connection
    recv: Connection
    chunk: list[int] = field(default_factory=list)
    done: int = 0
    ready: bool = False
    since: float = 0.0  # when the running call started (monotonic)

    def kill(self) -> None:
        for conn in (self.send, self.recv):
            conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _spawn_worker() -> _Worker:
    task_r, task_w = os.pipe()
    result_r, result_w = os.pipe()
    try:
        proc = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "nudgekit.rewards._worker", str(task_r), str(result_w)],
            pass_fds=(task_r, result_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            close_fds=True,
        )
    finally:
        os.close(task_r)
        os.close(result_w)
    worker = _Worker(proc, Connection(task_w, readable=False), Connection(result_r, writable=False))
    worker.send.send_bytes(pickle.dumps(list(sys.path)))
    return worker


def _chunks(n: int, workers: int) -> deque[list[int]]:
    """Contiguous index chunks, about four per worker so that slow chunks are balanced."""
    size = max(1, -(-n // (workers * 4)))
    return deque(list(range(i, min(n, i + size))) for i in range(0, n, size))


class VerifierPool:
    """Persistent worker processes that run verifier calls with a hard timeout.

    Args:
        workers: number of worker processes (started on first use).
        grace_s: how long past ``timeout_s`` a call may run before its worker is killed.
    """

    def __init__(self, workers: int = 2, grace_s: float = 1.0) -> None:
        self.size = max(1, workers)
        self.grace_s = grace_s
        self.workers: list[_Worker] = []
        self.killed = 0  # workers killed for running past the hard timeout (or dying)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def hard_timeout_s(self, timeout_s: float | None) -> float | None:
        """The wall-clock limit of one call: ``timeout_s + grace_s`` (None: no limit)."""
        return None if timeout_s is None or timeout_s <= 0 else timeout_s + self.grace_s

    def run(self, fn: RawVerifier, items: list[tuple[str, str]], timeout_s: float | None):
        """Score ``items`` with ``fn`` in the workers.

        Args:
            fn: a picklable raw verifier (a module-level function).
            items: ``(completion, answer)`` string pairs.
            timeout_s: the soft per-call limit; the hard one is `hard_timeout_s`.

        Returns:
            One ``(score, outcome, seconds)`` per item, in order; outcome is ``ok``,
            ``failure`` or ``timeout``; seconds is the call's own run time (for a killed call,
            the time until the kill).
        """
        if not items:
            return []
        with self._lock:
            while len(self.workers) < self.size:
                self.workers.append(_spawn_worker())
            return self._run(fn, items, timeout_s)

    def _run(self, fn, items, timeout_s) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(items)
        pending = _chunks(len(items), self.size)
        limit = self.hard_timeout_s(timeout_s)
        while pending or any(w.chunk for w in self.workers):
            for worker in self.workers:
                if not worker.chunk and pending:
                    self._assign(worker, pending.popleft(), fn, items, timeout_s)
            busy = [w for w in self.workers if w.chunk]
            wait([w.recv for w in busy], timeout=self._next_deadline(busy, limit))
            for worker in busy:
                self._collect(worker, results, pending, limit)
        return results  # type: ignore[return-value]

    def _assign(self, worker: _Worker, chunk: list[int], fn, items, timeout_s) -> None:
        worker.chunk, worker.done, worker.ready = chunk, 0, False
        worker.since = time.monotonic()
        try:
            worker.send.send_bytes(pickle.dumps((fn, timeout_s, [items[i] for i in chunk])))
        except OSError:
            pass  # a dead worker: its pipe reads EOF next and the chunk is requeued

    @staticmethod
    def _next_deadline(busy: list[_Worker], limit: float | None) -> float | None:
        ends = [w.since + (limit if w.ready and limit else STARTUP_S) for w in busy]
        return max(0.0, min(ends) - time.monotonic()) if ends else None

    def _collect(self, worker: _Worker, results, pending: deque, limit: float | None) -> None:
        """Read what ``worker`` reported; kill it if its running call is past the deadline."""
        try:
            while worker.chunk and worker.recv.poll():
                self._read(worker, worker.recv.recv_bytes(), results)
        except (EOFError, OSError):
            self._replace(worker, results, pending, "failure")  # the worker died (e.g. OOM)
            return
        if not worker.chunk:
            return
        overdue = time.monotonic() - worker.since
        if overdue > (limit if worker.ready and limit else STARTUP_S):
            self._replace(worker, results, pending, "timeout" if worker.ready else "failure")

    @staticmethod
    def _read(worker: _Worker, message: bytes, results) -> None:
        kind, body = message[:1], message[1:]
        if kind == b"r":
            worker.ready = True
        elif kind == b"e":  # the verifier could not be unpickled there: the chunk scores 0
            for i in worker.chunk:
                results[i] = (0.0, "failure", 0.0)
            worker.chunk = []
            return
        for score, seconds, code in RECORD.iter_unpack(body):
            results[worker.chunk[worker.done]] = (score, OUTCOMES[code], seconds)
            worker.done += 1
        worker.since = time.monotonic()
        if worker.done == len(worker.chunk):
            worker.chunk = []

    def _replace(self, worker: _Worker, results, pending: deque, outcome: str) -> None:
        """Kill ``worker``: its running call gets ``outcome``, the rest of its chunk is redone."""
        current, rest = worker.chunk[worker.done], worker.chunk[worker.done + 1 :]
        results[current] = (0.0, outcome, time.monotonic() - worker.since)
        if rest:
            pending.appendleft(rest)
        worker.kill()
        self.killed += 1
        self.workers[self.workers.index(worker)] = _spawn_worker()

    def close(self) -> None:
        """Stop every worker (they also exit on their own when this process ends)."""
        with self._lock:
            if os.getpid() == self._pid:
                for worker in self.workers:
                    worker.kill()
            self.workers = []


_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def default_workers() -> int:
    """``NUDGEKIT_VERIFIER_WORKERS`` if set, else min(4, CPU count)."""
    env = os.environ.get("NUDGEKIT_VERIFIER_WORKERS")
    return int(env) if env else min(4, os.cpu_count() or 1)


def get_pool() -> VerifierPool:
    """The process-wide pool (a forked child does not share its parent's workers)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._pid != os.getpid():
            _POOL = VerifierPool(default_workers())
            atexit.register(_POOL.close)
        return _POOL
