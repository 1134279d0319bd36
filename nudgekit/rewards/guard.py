"""Run a verifier function so that it never raises and never hangs.

`Verifier` wraps a raw ``fn(completion, answer) -> float`` and is what `load_verifier` returns.
Every call is counted in `Verifier.stats`; an exception or a malformed input scores 0.0 and counts
as a failure, a call that runs past ``timeout_s`` scores 0.0 and counts as a timeout.

How the timeout works (and why):

* By default (``isolation="process"``) calls run in a small pool of worker processes
  (`nudgekit.rewards.pool`): a call that runs past ``timeout_s`` is stopped by the SIGALRM timer
 of `nudgekit.rewards.timeouts` inside the worker, and one that still runs ``grace_s`` later (stuck in C code, or
  swallowing the timeout) gets its worker process killed and replaced. This holds from any
  thread. `Verifier.batch` sends many calls at once, which keeps the overhead small.
* With ``isolation="inline"`` (or for a raw verifier that cannot be pickled, such as a lambda or
  a function of ``__main__``) the call runs in this process. In the main thread a ``SIGALRM``
  interval timer raises `VerifierTimeout` inside the running Python code, so a runaway sympy
  simplification is actually stopped. `VerifierTimeout` derives from `BaseException` so that
  ``except Exception`` blocks inside math-verify or sympy cannot swallow it. Anywhere else (a
  worker thread, a platform without ``SIGALRM``, or when some outer code already armed the
  real-time timer) the call runs in a daemon thread and the caller waits at most ``timeout_s``;
  Python threads cannot be killed, so an abandoned call finishes in the background. Input
  lengths are capped (``max_chars``) so that this stays rare and cheap.

math-verify's own signal timeouts are switched off by the math verifier (they only work in the
main thread, and their ``signal.alarm(0)`` would cancel this guard's timer).
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from nudgekit.rewards.timeouts import VerifierTimeout, as_score, call_with_timeout

RawVerifier = Callable[[str, str], float]
Outcome = tuple[float, str, float]  # (score, "ok" | "failure" | "timeout", seconds)
ISOLATIONS = ("process", "inline")


@dataclass
class VerifierStats:
    """Counters of one `Verifier`: every call, and how many scored 0 by failure or timeout."""

    calls: int = 0
    failures: int = 0
    timeouts: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _as_text(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    # Answers often arrive as numbers from json/parquet columns; text from anything else is a bug.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{what} must be a string, got {type(value).__name__}")


def _is_portable(fn: object) -> bool:
    """Whether ``fn`` can be sent to a worker process (pickled by reference and importable)."""
    if getattr(fn, "__module__", None) == "__main__":
        return False
    try:
        pickle.dumps(fn)
    except Exception:  # noqa: BLE001 - lambdas, closures, local functions
        return False
    return True


class Verifier:
    """A guarded ``(completion, answer) -> float`` callable with call counters.

    Args:
        fn: the raw verifier; may raise or run long, the wrapper takes care of both.
        name: the registry name, used in logs and reward names.
        timeout_s: per-call time limit in seconds (None: no limit).
        max_chars: completions longer than this keep only their last ``max_chars`` characters
            (final answers sit at the end) and answers longer than this score 0; this bounds
            the work any single call can cause.
        isolation: ``"process"`` runs calls in the worker pool with a hard timeout;
            ``"inline"`` runs them in this process (the signal / thread guard only).
    """

    def __init__(
        self,
        fn: RawVerifier,
        name: str,
        timeout_s: float | None = 5.0,
        max_chars: int = 20_000,
        isolation: str = "process",
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.fn = fn
        self.name = name
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self.isolation = isolation if _is_portable(fn) else "inline"
        self.stats = VerifierStats()
        self._lock = threading.Lock()

    def _prepare(self, completion: object, answer: object) -> tuple[str, str] | None:
        """The (completion, answer) strings to verify, or None for malformed input."""
        try:
            text = _as_text(completion, "completion")[-self.max_chars :]
            gold = _as_text(answer, "answer")
        except TypeError:
            return None
        return None if len(gold) > self.max_chars else (text, gold)

    def _run_inline(self, text: str, gold: str) -> Outcome:
        start = time.perf_counter()
        score, outcome = 0.0, "ok"
        try:
            score = as_score(call_with_timeout(lambda: self.fn(text, gold), self.timeout_s))
        except VerifierTimeout:
            outcome = "timeout"
        except Exception:  # noqa: BLE001 - the contract: a verifier never raises
            outcome = "failure"
        return score, outcome, time.perf_counter() - start

    def _run(self, items: list[tuple[str, str]]) -> list[Outcome]:
        if self.isolation == "process" and items:
            from nudgekit.rewards.pool import get_pool

            try:
                return get_pool().run(self.fn, items, self.timeout_s)
            except OSError:  # no processes here (a sandbox): the inline guard still holds
                self.isolation = "inline"
        return [self._run_inline(text, gold) for text, gold in items]

    def outcomes(self, completions: Sequence[object], answers: Sequence[object]) -> list[Outcome]:
        """Run and count many calls; one ``(score, outcome, seconds)`` per pair.

        The outcome is ``ok``, ``failure`` (malformed input or the raw verifier raised) or
        ``timeout``; the score of a failure or a timeout is 0.0.
        """
        if len(completions) != len(answers):
            raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
        prepared = [self._prepare(c, a) for c, a in zip(completions, answers)]
        done = iter(self._run([p for p in prepared if p is not None]))
        results = [next(done) if p is not None else (0.0, "failure", 0.0) for p in prepared]
        with self._lock:
            self.stats.calls += len(results)
            self.stats.failures += sum(r[1] == "failure" for r in results)
            self.stats.timeouts += sum(r[1] == "timeout" for r in results)
        return [(score if outcome == "ok" else 0.0, outcome, s) for score, outcome, s in results]

    def batch(self, completions: Sequence[object], answers: Sequence[object]) -> list[float]:
        """Score many ``(completion, answer)`` pairs at once (one round trip to the pool).

        Returns:
            One score per pair; a malformed pair, a failure or a timeout scores 0.0 and counts.
        """
        return [score for score, _, _ in self.outcomes(completions, answers)]

    def __call__(self, completion: str, answer: str) -> float:
        return self.batch([completion], [answer])[0]

    def reset_stats(self) -> VerifierStats:
        """Zero the counters and return the values they had (e.g. once per logging step)."""
        with self._lock:
            old, self.stats = self.stats, VerifierStats()
        return old

    def __repr__(self) -> str:
        return (
            f"Verifier({self.name!r}, timeout_s={self.timeout_s}, "
            f"isolation={self.isolation!r}, stats={self.stats})"
        )

    # Locks don't pickle; verifiers must, to cross into dataloader / multiprocessing workers.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
