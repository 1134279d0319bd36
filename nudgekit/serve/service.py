"""`Service`: what the HTTP layer calls: check a request, render its questions, queue them, wait,
answer; plus the health, models and progress documents and the served counts.

Rendering and counting use tokenizers of their own (not the decoder's), under one lock, so
handler threads never share a tokenizer with the scheduler thread (fast tokenizers refuse
concurrent use with "Already borrowed").
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from typing import Any

from nudgekit.engines.tokens import prompt_ids
from nudgekit.nudging.attribution import BASE, NUDGE
from nudgekit.nudging.text import encode
from nudgekit.serve.protocol import ApiError, Job, Limits, parse_request
from nudgekit.serve.responses import response
from nudgekit.serve.scheduler import Scheduler, Work

LATENCY_WINDOW = 10_000  # latencies kept for the progress percentiles


class Service:
    """The nudging model behind the OpenAI dialect.

    Args:
        model_name: the served model name.
        limits: request limits.
        base_prompt: renders a question for the base model.
        nudging_prompt: renders a question for the nudging model.
        base_tokenizer: counts base-prompt and completion tokens (not the decoder's instance).
        nudging_tokenizer: counts nudging-prompt and nudged tokens.
        scheduler: decodes the questions.
        max_requests: stop after this many answered generation requests (None: never).
        on_stop: called once when `max_requests` is reached.
    """

    def __init__(
        self,
        model_name: str,
        limits: Limits,
        base_prompt: Callable[[str], str],
        nudging_prompt: Callable[[str], str],
        base_tokenizer: Any,
        nudging_tokenizer: Any,
        scheduler: Scheduler,
        max_requests: int | None = None,
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        self.model_name, self.limits, self.scheduler = model_name, limits, scheduler
        self.base_prompt, self.nudging_prompt = base_prompt, nudging_prompt
        self.toks = {BASE: base_tokenizer, NUDGE: nudging_tokenizer}
        self.max_requests, self.on_stop = max_requests, on_stop
        self._front = threading.Lock()  # rendering and counting (the front tokenizers)
        self._stats = threading.Lock()
        self.started = time.time()
        self.draining = False
        self.answered = 0
        self.statuses: Tally[int] = Tally()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.tokens = {"prompt": 0, "completion": 0}

    # ------------------------------------------------------------------ generation

    def complete(self, body: Any, chat: bool) -> dict[str, Any]:
        """Answer one decoded request body (raises `ApiError`)."""
        job = parse_request(body, chat, self.model_name, self.limits)
        works, prompt_tokens = self._prepare(job)
        self.scheduler.submit(works)
        self._wait(works)
        with self._front:
            answer = response(
                self.model_name,
                chat,
                [w.outputs for w in works],
                job.stop,
                prompt_tokens,
                {k: self._counter(k) for k in self.toks},
            )
        with self._stats:
            self.tokens["prompt"] += prompt_tokens
            self.tokens["completion"] += answer["usage"]["completion_tokens"]
        return answer

    def _counter(self, source: str) -> Callable[[str], int]:
        tok = self.toks[source]
        return lambda text: len(encode(tok, text))

    def _prepare(self, job: Job) -> tuple[list[Work], int]:
        works, prompt_tokens = [], 0
        seed = job.seed if job.seed is not None else random.SystemRandom().randrange(2**31)
        where = "messages" if job.chat else "prompt"
        with self._front:
            for i, question in enumerate(job.questions):
                try:
                    base, nudge = self.base_prompt(question), self.nudging_prompt(question)
                except Exception as exc:  # noqa: BLE001 - a template refusing the text
                    raise ApiError(400, f"{where} {i} cannot be rendered: {exc}", where) from None
                sizes = {
                    "base": len(prompt_ids(self.toks[BASE], base)),
                    "nudging": len(prompt_ids(self.toks[NUDGE], nudge)),
                }
                for model, size in sizes.items():
                    if size > self.limits.max_prompt_tokens:
                        raise ApiError(
                            400,
                            f"{where} {i} is {size} tokens once rendered for the {model} model; "
                            f"this server allows at most {self.limits.max_prompt_tokens}",
                            where,
                            code="context_length_exceeded",
                        )
                prompt_tokens += sizes["base"]
                works.append(
                    Work(base, nudge, job.max_tokens, job.n, job.temperature, job.top_p, seed)
                )
        return works, prompt_tokens

    def _wait(self, works: list[Work]) -> None:
        deadline = time.monotonic() + self.limits.request_timeout_s
        for w in works:
            if not w.done.wait(max(0.0, deadline - time.monotonic())):
                for x in works:
                    x.cancelled = True
                raise ApiError(
                    504,
                    f"the request was not answered within {self.limits.request_timeout_s:g} s "
                    f"({self.scheduler.queued} questions queued)",
                    kind="timeout",
                )
            if w.error is not None:
                why = " ".join(str(w.error).split())[:300]
                raise ApiError(500, f"decoding failed: {why}", kind="server_error")

    # ------------------------------------------------------------------ accounting

    def record(self, status: int, seconds: float) -> None:
        """Count one answered generation request; ask to stop at `max_requests`."""
        with self._stats:
            self.answered += 1
            self.statuses[status] += 1
            if status == 200:
                self.latencies.append(seconds)
            stop = self.max_requests is not None and self.answered == self.max_requests
        if stop:
            self.on_stop()

    def health(self) -> dict[str, Any]:
        return {"status": "draining" if self.draining else "ok", "model": self.model_name}

    def models(self) -> dict[str, Any]:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": int(self.started),
            "owned_by": "nudgekit",
        }
        return {"object": "list", "data": [card]}

    def progress(self) -> dict[str, Any]:
        with self._stats:
            lat = sorted(self.latencies)
            ok = self.statuses[200]
            doc = {
                "status": self.health()["status"],
                "model": self.model_name,
                "uptime_s": round(time.time() - self.started, 3),
                "requests": self.answered,
                "ok": ok,
                "errors": self.answered - ok,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "queued": self.scheduler.queued,
                "in_flight": self.scheduler.in_flight,
                "decode_calls": self.scheduler.calls,
                "questions_decoded": self.scheduler.decoded,
                "decode_s": round(self.scheduler.decode_s, 3),
                "prompt_tokens": self.tokens["prompt"],
                "completion_tokens": self.tokens["completion"],
            }
        doc.update(latency_summary(lat))
        return doc


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    """p50 / p99 / mean of successful requests' latencies, in seconds (None when none)."""
    if not latencies:
        return {"latency_p50_s": None, "latency_p99_s": None, "latency_mean_s": None}
    lat = sorted(latencies)
    return {
        "latency_p50_s": round(percentile(lat, 50), 4),
        "latency_p99_s": round(percentile(lat, 99), 4),
        "latency_mean_s": round(statistics.fmean(lat), 4),
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """The `q`-th percentile by nearest rank."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]
