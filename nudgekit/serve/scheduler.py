"""The batching scheduler: one thread owns the models and decodes queued questions together.

HTTP handler threads `submit` `Work` items (one per question of a request) and wait on them;
the scheduler thread takes what is queued, waits for more while they keep coming (until no
request arrived for `wait_s`, at most `MAX_WAITS * wait_s`, up to `batch_size` questions), and
decodes compatible items in one call, so concurrent requests share the decoder's batch. Items are
compatible when they ask for the same budget (`max_tokens`): greedy nudging is batch-invariant
(each question's text does not depend on what it is decoded next to; `tests/test_serve.py`
checks it), so greedy items of many requests share one call, and a greedy `n > 1` decodes once
and repeats the answer.

With a `stream` function (the cached decoder's `stream`), a greedy call is continuous: a
compatible question queued while the call runs joins it as soon as a row is free, and every
answer is handed back the moment it is finished, so a request never waits for the slowest
question of a wave. It joins only while no incompatible item waits ahead of it in the queue
(that item is served by the next call: no request starves). Without one (the chunked decoder),
calls run in waves over the questions taken at their start.

A sampled item (temperature > 0) is decoded in a call of its own, its `n` samples as questions
`0..n-1` with the request's seed, so its samples do not depend on what else the server is doing
(as in `nudgekit.eval.nudged`).

Only this thread touches the models, so nothing in the decoders has to be thread-safe.
"""

from __future__ import annotations

import itertools
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
# stream(take, done, max_tokens): greedy decoding fed by take() -> (base, nudging, key) | None,
# each answer handed to done(key, output) when it is finished (`CachedNudgingDecoder.stream`)
TakeFn = Callable[[], "tuple[str, str, int] | None"]
StreamFn = Callable[[TakeFn, Callable[[int, Any], None], int], None]


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
        stream: continuous greedy decoding (see `StreamFn`); None: greedy calls run in waves.
    """

    def __init__(
        self,
        decode: DecodeFn,
        batch_size: int,
        wait_s: float,
        max_queued: int,
        stream: StreamFn | None = None,
    ) -> None:
        self.decode, self.batch_size, self.wait_s = decode, batch_size, wait_s
        self.stream = stream
        self.max_queued = max_queued
        self._queue: deque[Work] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._last_arrival = 0.0
        self.in_flight = 0  # questions taken by the running decode call and not answered yet
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
        if not sampled and self.stream is not None:
            self._run_stream(batch)
            return
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

    def _run_stream(self, batch: list[Work]) -> None:
        """Greedy `batch` through `stream`; compatible work queued meanwhile joins the call."""
        key, max_tokens = batch[0].key, batch[0].max_tokens
        pending, running, keys = deque(batch), {}, itertools.count()

        def take() -> tuple[str, str, int] | None:
            with self._cond:
                work = pending.popleft() if pending else self._join(key)
            if work is None:
                return None
            k = next(keys)
            running[k] = work
            return work.base_prompt, work.nudging_prompt, k

        def done(k: int, output: Any) -> None:
            work = running.pop(k)
            work.outputs = [output] * work.n
            self._answered([work])

        start = time.perf_counter()
        try:
            self.stream(take, done, max_tokens)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
            log.exception("serve: a streaming decode call failed")
            failed = [*running.values(), *pending]
            for w in failed:
                w.error = exc
            self._answered(failed)
        finally:
            self.decode_s += time.perf_counter() - start
            self.calls += 1

    def _join(self, key: tuple) -> Work | None:
        """The next queued item if it may join the running call (held: `_cond`): the first live
        item, when it has `key`; cancelled items on the way are dropped."""
        while self._queue:
            w = self._queue[0]
            if w.cancelled:
                self._queue.popleft().done.set()
                continue
            if w.key != key:
                return None
            self.in_flight += 1
            return self._queue.popleft()
        return None

    def _answered(self, works: list[Work]) -> None:
        with self._cond:
            self.in_flight -= len(works)
            self.decoded += len(works)
        for w in works:
            w.done.set()
