"""Time limits for one verifier call: SIGALRM in the main thread, a daemon thread elsewhere.

`VerifierTimeout` derives from `BaseException` so that ``except Exception`` blocks inside
math-verify or sympy cannot swallow it. Shared by the in-process guard (`nudgekit.rewards.guard`)
and the pool's worker processes (`nudgekit.rewards._worker`), which is why it is its own module.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable


class VerifierTimeout(BaseException):
    """Raised inside a verifier call that ran past its time limit."""


def _can_use_alarm() -> bool:
    """True when a SIGALRM timer may be armed here without disturbing anyone else's."""
    if not hasattr(signal, "setitimer"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    # An outer timer is already running (e.g. a test harness); don't steal it.
    return signal.getitimer(signal.ITIMER_REAL)[0] == 0.0


def _call_with_alarm(fn: Callable[[], float], timeout_s: float) -> float:
    fired = False

    def on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal fired
        fired = True
        raise VerifierTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            result = fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    if fired:  # the timeout was raised but something swallowed it: the result is not trustworthy
        raise VerifierTimeout
    return result


def _call_in_thread(fn: Callable[[], float], timeout_s: float) -> float:
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="nudgekit-verifier")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise VerifierTimeout
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def call_with_timeout(fn: Callable[[], float], timeout_s: float | None) -> float:
    """Return ``fn()``, raising `VerifierTimeout` if it takes longer than ``timeout_s`` seconds.

    Args:
        fn: a zero-argument callable.
        timeout_s: the limit in seconds; None or <= 0 runs ``fn`` without a limit.

    Returns:
        What ``fn`` returned.
    """
    if timeout_s is None or timeout_s <= 0:
        return fn()
    if _can_use_alarm():
        return _call_with_alarm(fn, timeout_s)
    return _call_in_thread(fn, timeout_s)


def as_score(value: object) -> float:
    """Coerce a raw verifier result to a float in [0, 1]; bool and numbers are accepted."""
    score = float(value)  # type: ignore[arg-type]
    if not math.isfinite(score):
        raise ValueError(f"verifier returned {value!r}")
    return min(1.0, max(0.0, score))
