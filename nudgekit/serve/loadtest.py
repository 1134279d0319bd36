"""A bounded load test of an OpenAI-compatible completions server on loopback.

`run_load` sends `requests` completions requests from `clients` threads (each takes the next
request number until all are sent), request `i` asking about `questions[i % len(questions)]`,
and checks every answer: HTTP 200, one choice, and, when `expected` is given, the text the
in-process decoder wrote for that question (so a lost, swapped or mixed-up answer is caught, as
long as the questions are distinct). It reports errors, mismatches, latency p50/p99 and
throughput. Used by `experiments/bench/serve_load.py` and the fast tests.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from nudgekit.serve.service import latency_summary


def post_json(url: str, path: str, body: Any, timeout_s: float = 120.0) -> tuple[int, Any]:
    """POST `body` (JSON-encoded unless bytes) to `url` + `path`; (status, decoded answer)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        conn.request("POST", path, data, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except json.JSONDecodeError:
        return resp.status, raw.decode(errors="replace")


def get_json(url: str, path: str, timeout_s: float = 30.0) -> tuple[int, Any]:
    """GET `url` + `path`; (status, decoded answer)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def run_load(
    url: str,
    model: str,
    questions: Sequence[str],
    expected: dict[str, str] | None,
    clients: int,
    requests: int,
    max_tokens: int,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Send the load and check every answer (see the module docstring).

    Returns:
        `clients`, `requests`, `answered`, `ok`, `errors` (non-200 or transport failures),
        `mismatches` (200 with the wrong text or shape), `first_problem`, `seconds`,
        `throughput_rps`, and `latency_p50_s` / `latency_p99_s` / `latency_mean_s`.
    """
    numbers = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    tally = {"answered": 0, "ok": 0, "errors": 0, "mismatches": 0}
    problems: list[str] = []

    def client() -> None:
        while (i := next(numbers)) < requests:
            q = questions[i % len(questions)]
            body = {"model": model, "prompt": q, "max_tokens": max_tokens, "temperature": 0}
            start = time.perf_counter()
            try:
                status, answer = post_json(url, "/v1/completions", body, timeout_s)
                problem = _check(status, answer, expected.get(q) if expected else None)
            except OSError as exc:
                status, problem = 0, f"request {i}: {type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - start
            with lock:
                tally["answered"] += status != 0
                key = "ok" if problem is None else "errors" if status != 200 else "mismatches"
                tally[key] += 1
                if problem is None:
                    latencies.append(seconds)
                elif not problems:
                    problems.append(f"request {i}: {problem}")

    start = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    report = {"clients": clients, "requests": requests, **tally}
    report["first_problem"] = problems[0] if problems else None
    report["seconds"] = round(seconds, 3)
    report["throughput_rps"] = round(requests / seconds, 2) if seconds else None
    report.update(latency_summary(latencies))
    return report


def _check(status: int, answer: Any, expected: str | None) -> str | None:
    """None when the answer is right, else what is wrong with it."""
    if status != 200:
        return f"HTTP {status}: {answer}"
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or len(choices) != 1:
        return f"expected one choice, got {answer!r:.200}"
    text = choices[0].get("text")
    if expected is not None and text != expected:
        return f"text {text!r:.80} != expected {expected!r:.80}"
    return None
