"""Reliability probes for `OpenAIEngine` (issue 19, part 6), each against a tiny real server.

Every server binds to 127.0.0.1 in a daemon thread and misbehaves in exactly one way: drips bytes,
stalls, answers 200 with a broken body, echoes the API key in an error. Each probe asserts the
fixed behaviour: a one-line `NudgekitError` that says what went wrong, within the deadline, with
no secret in the message or the logs. Deadlines are 1 s, so the file runs in a few seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers.torchrun import free_port

from nudgekit.engines import GenerationRequest, OpenAIEngine, openai_http
from nudgekit.errors import NudgekitError

KEY = "sk-probe-0123456789abcdef"  # the API key the engine is given
ENV = "NUDGEKIT_PROBE_API_KEY"
STALL_S = 4.0  # the longest any misbehaving handler keeps a connection open


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes | dict) -> None:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _ok(choice: dict) -> dict:
    return {"choices": [{"index": 0, "finish_reason": "length", **choice}]}


@pytest.fixture
def fast_backoff(monkeypatch):
    """Retry after 0.05 s instead of 0.5 s, to keep the retry tests quick."""
    monkeypatch.setattr(openai_http, "BACKOFF_S", 0.05)


@pytest.fixture
def serve():
    """Start a server whose every POST runs `respond(handler)`; returns (base_url, hits)."""
    servers, stop = [], threading.Event()

    def start(respond):
        hits: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 (http.server naming)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hits.append(self.headers.get("Authorization"))
                try:
                    respond(self, stop)
                except OSError:  # the client gave up (that is the point of most probes)
                    pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", hits

    yield start
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def _engine(url: str, **kwargs) -> OpenAIEngine:
    kwargs = {"timeout_s": 1.0, "max_retries": 0, "api_key_env": ENV, **kwargs}
    return OpenAIEngine(url, "m", vllm_extensions=False, **kwargs)


def _fail(engine: OpenAIEngine, n: int = 1) -> tuple[str, float]:
    """Run one request that must fail; return the one-line message and the seconds it took."""
    start = time.monotonic()
    with pytest.raises(NudgekitError) as err:
        engine.generate([GenerationRequest("Hi", n=n, max_new_tokens=2, logprobs=True)])
    message = str(err.value)
    assert "\n" not in message
    return message, time.monotonic() - start


# --- deadline ----------------------------------------------------------------------------------


def _drip_body(handler, stop):
    """Headers, then one body byte every 0.5 s: every read succeeds, the body never ends."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(int(STALL_S / 0.5)):
        handler.wfile.write(b" ")
        if stop.wait(0.5):
            return


def _drip_headers(handler, stop):
    """The status line and headers themselves, one byte every 0.5 s."""
    for byte in b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"[: int(STALL_S / 0.5)]:
        handler.wfile.write(bytes([byte]))
        if stop.wait(0.5):
            return


def _stall_after_headers(handler, stop):
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b'{"choices": ')
    stop.wait(STALL_S)


def _stall_before_headers(handler, stop):
    stop.wait(STALL_S)


@pytest.mark.parametrize(
    "respond", [_drip_body, _drip_headers, _stall_after_headers, _stall_before_headers]
)
def test_a_slow_server_times_out_at_the_deadline(serve, respond):
    url, _ = serve(respond)
    message, took = _fail(_engine(url, timeout_s=1.0))
    assert "timed out after 1 s" in message
    assert "unreachable" not in message
    assert 0.9 < took < 1.8


def test_the_deadline_covers_retries(serve):
    url, hits = serve(lambda h, stop: _send(h, 503, {"error": {"message": "overloaded"}}))
    message, took = _fail(_engine(url, timeout_s=1.0, max_retries=10))
    assert "HTTP 503: overloaded" in message
    assert 1 < len(hits) < 5  # retried with backoff, then stopped at the deadline
    assert took < 1.5


def test_a_failing_batch_does_not_wait_for_queued_requests(serve):
    url, hits = serve(_stall_before_headers)
    engine = _engine(url, timeout_s=1.0, max_concurrency=2)
    start = time.monotonic()
    with pytest.raises(NudgekitError, match="timed out after 1 s"):
        engine.generate([GenerationRequest("Hi", max_new_tokens=2) for _ in range(20)])
    assert time.monotonic() - start < 1.8  # one deadline, not 10 rounds of it
    assert len(hits) == 2  # the queued 18 were never sent


# --- unreachable and defaults --------------------------------------------------------------------


def test_a_refused_port_is_unreachable_and_fast():
    port = free_port()
    message, took = _fail(_engine(f"http://127.0.0.1:{port}"))
    assert f"unreachable at http://127.0.0.1:{port}/v1/completions" in message
    assert "connection refused" in message
    assert "timed out" not in message
    assert took < 1


def test_defaults_fail_a_dead_server_in_seconds():
    engine = OpenAIEngine(f"http://127.0.0.1:{free_port()}", "m")
    message, took = _fail(engine)
    assert "unreachable" in message and "3 attempts" in message
    assert took < 5  # two retries with 0.5 s and 1 s backoff
    # a stalling server is bounded by one overall deadline per request, retries included
    assert engine.timeout_s <= 60 and engine.connect_timeout_s <= 10


# --- malformed 200 answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON: <html>502 Bad Gateway</html>"),
        ({"object": "text_completion"}, 'no "choices" list'),
        ({"error": {"message": "model is loading"}}, 'no "choices" list: model is loading'),
        (_ok({"text": None}), 'choice 0: "text" is null, expected a string'),
        (_ok({}), 'choice 0: "text" is missing'),
        (_ok({"text": 7}), 'choice 0: "text" is int, expected a string'),
        (_ok({"text": "a", "logprobs": "x"}), 'choice 0: "logprobs" is str'),
        (
            _ok({"text": "a", "logprobs": {"tokens": ["a"], "token_logprobs": [None]}}),
            '"logprobs.token_logprobs" must be a list of numbers',
        ),
        (
            _ok({"text": "a", "logprobs": {"tokens": ["token_id:x"], "token_logprobs": [-1.0]}}),
            "\"logprobs.tokens\" item 'token_id:x'",
        ),
        (
            _ok({"text": "a", "logprobs": {"tokens": [1], "token_logprobs": [-1.0]}}),
            '"logprobs.tokens" must be a list of strings',
        ),
    ],
)
def test_a_malformed_200_is_one_line_and_not_retried(serve, body, expected):
    url, hits = serve(lambda h, stop: _send(h, 200, body))
    message, _ = _fail(_engine(url, max_retries=2))
    assert expected in message
    assert message.startswith("openai engine: request 0")
    assert len(hits) == 1


def test_text_is_never_none(serve):
    url, _ = serve(lambda h, stop: _send(h, 200, _ok({"text": ""})))
    (result,) = _engine(url).generate([GenerationRequest("Hi", max_new_tokens=2)])
    assert result.samples[0].text == ""


# --- secrets -------------------------------------------------------------------------------------


def _echo_auth(status: int):
    def respond(handler, stop):
        auth = handler.headers.get("Authorization")
        _send(handler, status, {"error": {"message": f"bad credentials: {auth} (key {KEY})"}})

    return respond


@pytest.mark.parametrize(("status", "attempts"), [(401, 1), (500, 3)])
def test_an_echoed_key_never_reaches_the_message_or_the_logs(
    serve, fast_backoff, monkeypatch, caplog, status, attempts
):
    monkeypatch.setenv(ENV, KEY)
    url, hits = serve(_echo_auth(status))
    with caplog.at_level(logging.DEBUG):
        message, _ = _fail(_engine(url, max_retries=2, timeout_s=5.0))
    assert hits[0] == f"Bearer {KEY}" and len(hits) == attempts
    assert f"HTTP {status}: bad credentials: Bearer ***" in message
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for text in (message, logged):
        assert KEY not in text
    if attempts > 1:
        assert "retrying" in caplog.text


def test_env_credentials_are_scrubbed_too(serve, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret-value")
    url, _ = serve(lambda h, stop: _send(h, 400, b"rejected sk-env-secret-value"))
    message, _ = _fail(_engine(url))
    assert "HTTP 400: rejected ***" in message


def test_a_key_in_the_url_is_not_printed(serve):
    port = free_port()
    message, _ = _fail(_engine(f"http://user:{KEY}@127.0.0.1:{port}/v1?api-key={KEY}"))
    assert KEY not in message
    assert f"unreachable at http://127.0.0.1:{port}/v1/completions" in message


@pytest.mark.parametrize("url", ["127.0.0.1:8000", f"http://u:{KEY}@host:99999/v1", "ftp://h/"])
def test_a_bad_base_url_is_one_line_at_construction(url):
    with pytest.raises(NudgekitError, match="base_url must look like http") as err:
        OpenAIEngine(url, "m")
    assert KEY not in str(err.value)


# --- retry policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (404, 1), (429, 3), (502, 3)])
def test_only_retryable_statuses_are_retried(serve, fast_backoff, status, attempts):
    url, hits = serve(lambda h, stop: _send(h, status, {"error": "nope"}))
    message, _ = _fail(_engine(url, max_retries=2, timeout_s=5.0))
    assert f"HTTP {status}: nope" in message
    assert len(hits) == attempts


# --- config --------------------------------------------------------------------------------------


def test_engine_openai_config_binds():
    from helpers.config import compose_cfg
    from hydra.utils import instantiate

    from nudgekit.runtime import validate_targets

    cfg = compose_cfg(["engine=openai"], tiny=False)
    assert validate_targets(cfg) == []
    assert cfg.engine.model == cfg.model.name_or_path  # what `vllm serve PATH` serves
    engine = instantiate(cfg.engine)
    assert isinstance(engine, OpenAIEngine)
    assert (engine.timeout_s, engine.connect_timeout_s, engine.max_retries) == (60, 5, 2)
