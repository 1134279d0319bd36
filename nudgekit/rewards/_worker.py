"""The worker process of `nudgekit.rewards.pool`: ``python -m nudgekit.rewards._worker R W``.

It reads tasks from file descriptor R and writes results to W (the parent's pipes), so that
nothing a verifier prints can corrupt the protocol:

* the first message is the parent's ``sys.path`` (so ``"pkg.mod:fn"`` verifiers import here);
* each task is a pickled ``(fn, timeout_s, [(completion, answer), ...])``; the worker answers
  ``b"r"`` once ``fn`` is unpickled (its module imported) or ``b"e"`` when that failed, then
  ``b"d"`` messages carrying ``(score, seconds, outcome)`` records for the items done so far, flushed at
  least every `FLUSH_S` seconds while items complete, so the parent can tell which item is
  running and how long it has run.

Each call runs in this process's main thread under the SIGALRM guard of
`nudgekit.rewards.guard` (the soft timeout); the parent kills the whole process when a call
outlives the soft timeout by its grace period (the hard timeout).
"""

from __future__ import annotations

import pickle
import struct
import sys
import time
from multiprocessing.connection import Connection

from nudgekit.rewards.timeouts import VerifierTimeout, as_score, call_with_timeout

RECORD = struct.Struct("<ddB")  # score, seconds, outcome index
OUTCOMES = ("ok", "failure", "timeout")
FLUSH_S = 0.02


def run_one(fn, completion: str, answer: str, timeout_s: float | None) -> bytes:
    """One guarded call, packed as a (score, seconds, outcome index) record."""
    start = time.perf_counter()
    score, code = 0.0, 0
    try:
        score = as_score(call_with_timeout(lambda: fn(completion, answer), timeout_s))
    except VerifierTimeout:
        code = 2
    except Exception:  # noqa: BLE001 - the contract: a verifier never raises
        code = 1
    return RECORD.pack(score, time.perf_counter() - start, code)


def serve_task(message: bytes, send: Connection) -> None:
    """Run one task, streaming its records back."""
    try:
        fn, timeout_s, items = pickle.loads(message)  # noqa: S301 - our own parent's pipe
    except Exception:  # noqa: BLE001 - reported to the parent, which scores the task 0
        send.send_bytes(b"e")
        return
    send.send_bytes(b"r")
    buffer, flushed = [], time.monotonic()
    for completion, answer in items:
        buffer.append(run_one(fn, completion, answer, timeout_s))
        if time.monotonic() - flushed >= FLUSH_S:
            send.send_bytes(b"d" + b"".join(buffer))
            buffer, flushed = [], time.monotonic()
    if buffer:
        send.send_bytes(b"d" + b"".join(buffer))


def main(read_fd: int, write_fd: int) -> None:
    """Serve tasks until the parent closes the pipe."""
    recv = Connection(read_fd, writable=False)
    send = Connection(write_fd, readable=False)
    try:
        sys.path[:] = pickle.loads(recv.recv_bytes())  # noqa: S301
        while True:
            serve_task(recv.recv_bytes(), send)
    except (EOFError, OSError, KeyboardInterrupt):
        return


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
