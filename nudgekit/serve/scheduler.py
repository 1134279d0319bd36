"""The batching scheduler: one thread owns the models and decodes queued questions together.

HTTP handler threads `submit` `Work` items (one per question of a request) and wait on them;
the scheduler thread takes what is queued, waits for more while they keep coming (until no
request arrived for `wait_s`, at most `MAX_WAITS * wait_s`, up to `batch_size` questions), and decodes compatible items in one `decode` call, so concurrent requests share the
decoder's batch. Items are compatible when they ask for the same budget (`max_tokens`): greedy
nudging is batch-invariant (each question's text does not depend on what it is decoded next
to; `tests/test_serve.py` checks it), so greedy items of many requests share one call, and a
greedy `n > 1` decodes once and repeats the answer. A sampled item (temperature > 0) is decoded
in a call of its own, its `n` samples as questions `0..n-1` with the request's seed, so its
samples do not depend on what else the server is doing (as in `nudgekit.eval.nudged`).

Only this thread touches the models, so nothing in the decoders has to be thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nudgekit.serve.protocol import ApiError

log = logging.getLogger(__name__)

# decode(base_prompts, nudging_prompts, max_tokens, temperature, top_p, seed) -> outputs
MAX_WAITS = 10  # a batch waits at most this many `wait_s` for company
DecodeFn = Callable[[list[str], list[str], int, float, float, int], list[Any]]


@dataclass(eq=False)
class Work:
    """One question of a request, with its decoding settings; `outputs` (n of them) or
    `error` are filled in by the scheduler, then `done` is set."""

    base_prompt: str
    nudging_prompt: str
    max_tokens: int
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    outputs: list[Any] | None = None
    error: BaseException | None = None
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> tuple:
        """Items with equal keys may share a decode call (a sampled item shares with none)."""
        return (self.max_tokens,) if self.temperature == 0 else (self.max_tokens, id(self))


class Scheduler:
    """Decode queued `Work` in batches on one thread.

    Args:
        decode: runs the decoder (see `DecodeFn`).
        batch_size: most questions per decode call.
        wait_s: how long the first queued item waits for company before its call starts.
        max_queued: most questions queued or decoding; `submit` refuses more with 429.
    """

    def __init__(self, decode: DecodeFn, batch_size: int, wait_s: float, max_queued: int) -> None:
        self.decode, self.batch_size, self.wait_s = decode, batch_size, wait_s
        self.max_queued = max_queued
        self._queue: deque[Work] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._last_arrival = 0.0
        self.in_flight = 0  # questions in the running decode call
        self.calls = 0  # decode calls made
        self.decoded = 0  # questions decoded
        self.decode_s = 0.0
        self._thread = threading.Thread(target=self._loop, name="nudging-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, works: list[Work]) -> None:
        """Queue `works` (all or none)."""
        with self._cond:
            if self._closing:
                raise ApiError(503, "the server is shutting down", kind="server_error")
            if self.queued + self.in_flight + len(works) > self.max_queued:
                raise ApiError(
                    429,
                    f"too many questions queued ({self.queued + self.in_flight} of "
                    f"{self.max_queued}); retry later",
                    kind="rate_limit_error",
                )
            self._queue.extend(works)
            self._last_arrival = time.monotonic()
            self._cond.notify()

    def close(self, timeout_s: float | None = None) -> None:
        """Finish what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._run(batch)

    def _take(self) -> list[Work] | None:
        """The next compatible batch (None once closing and drained)."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait(0.5)
            # wait while requests keep arriving (a gap of wait_s ends it), at most MAX_WAITS gaps
            cap = time.monotonic() + MAX_WAITS * self.wait_s
            while len(self._queue) < self.batch_size and not self._closing:
                left = min(self._last_arrival + self.wait_s, cap) - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            key = self._queue[0].key
            batch, rest = [], deque()
            while self._queue:
                w = self._queue.popleft()
                if w.cancelled:
                    w.done.set()
                elif w.key == key and len(batch) < self.batch_size:
                    batch.append(w)
                else:
                    rest.append(w)
            self._queue = rest
            self.in_flight = len(batch)
            return batch

    def _run(self, batch: list[Work]) -> None:
        if not batch:
            return
        first = batch[0]
        sampled = first.temperature > 0
        count = first.n if sampled else 1
        base = [w.base_prompt for w in batch for _ in range(count)]
        nudge = [w.nudging_prompt for w in batch for _ in range(count)]
        start = time.perf_counter()
        try:
            outs = self.decode(
                base, nudge, first.max_tokens, first.temperature, first.top_p, first.seed
            )
            for i, w in enumerate(batch):
                w.outputs = outs[i * count : (i + 1) * count] if sampled else [outs[i]] * w.n
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
            log.exception("serve: a decode call of %d questions failed", len(base))
            for w in batch:
                w.error = exc
        finally:
            self.decode_s += time.perf_counter() - start
            self.calls += 1
            self.decoded += len(base)
            with self._cond:
                self.in_flight = 0
            for w in batch:
                w.done.set()
