"""A small OpenAI-compatible `/v1/completions` server for tests, over in-process `HFEngine`s.

It speaks the dialect `nudgekit.engines.OpenAIEngine` expects from `vllm serve`: every choice
carries `logprobs` (`tokens`, `token_logprobs`, `top_logprobs`; with
`return_tokens_as_token_ids` each token is `token_id:N`, keys of `top_logprobs` too), and a
completion that ended on the model's end-of-sequence token has `finish_reason: "stop"` and
`stop_reason: null` with that token in `tokens` (as vLLM reports it). Several models are served
at once, chosen by the request's `model` field.

Requests are handled on their own threads, but the engines run one request at a time (an
`HFEngine` is not thread-safe): results are exactly the in-process engine's for the same request,
while the server counts how many requests were in flight at once (`max_in_flight`).

It binds 127.0.0.1 on a free port and lives at most `lifetime_s` seconds (a timer shuts it down
even if a test forgets to), and `with OpenAITestServer(...) as server:` stops it on exit.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nudgekit.engines.base import GenerationRequest


class OpenAITestServer:
    """Serve `models` (name -> `HFEngine`) on 127.0.0.1 until `close()` or `lifetime_s`.

    Args:
        models: served model name -> engine.
        lifetime_s: the server shuts itself down after this many seconds.
        delay_s: seconds each request waits (in flight) before it is answered; makes overlap
            visible even when the model answers in microseconds.
    """

    def __init__(self, models: dict[str, Any], lifetime_s: float = 120.0, delay_s: float = 0.0):
        self.models, self.delay_s = models, delay_s
        self.lock = threading.Lock()  # one engine call at a time
        self.count_lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.close)
        self._timer.daemon = True
        self._closed = False

    def __enter__(self) -> OpenAITestServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def track(self, delta: int) -> None:
        with self.count_lock:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests += delta > 0

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer for one completions request."""
        engine = self.models.get(body.get("model"))
        if engine is None:
            return 404, {"error": {"message": f"model {body.get('model')!r} not served"}}
        request = GenerationRequest(
            prompt=body["prompt"],
            n=int(body.get("n", 1)),
            max_new_tokens=int(body.get("max_tokens", 16)),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            stop=list(body.get("stop") or []),
            seed=body.get("seed"),
            logprobs=True,
            top_logprobs=True,
        )
        with self.lock:
            result = engine.generate([request])[0]
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        choices = [_choice(i, s, request, engine, as_ids) for i, s in enumerate(result.samples)]
        used = sum(len(s.token_ids) for s in result.samples)
        usage = {"prompt_tokens": len(result.prompt_ids), "completion_tokens": used}
        return 200, {"object": "text_completion", "choices": choices, "usage": usage}


def _choice(index: int, sample: Any, request: GenerationRequest, engine: Any, as_ids: bool):
    def name(token: int) -> str:
        return f"token_id:{token}" if as_ids else engine.tokenizer.convert_ids_to_tokens(token)

    stop_reason = request.stop[0] if sample.finish_reason == "stop" else None
    return {
        "index": index,
        "text": sample.text,
        "finish_reason": "length" if sample.finish_reason == "length" else "stop",
        "stop_reason": stop_reason,  # a stop string, or null for the end-of-sequence token
        "logprobs": {
            "tokens": [name(t) for t in sample.token_ids],
            "token_logprobs": sample.logprobs,
            # logprobs=1: the top-1 token, plus the sampled one where it differs
            "top_logprobs": [
                {name(t): lp, name(top): top_lp}
                for t, lp, top, top_lp in zip(
                    sample.token_ids, sample.logprobs, sample.top_token_ids, sample.top_logprobs
                )
            ],
        },
    }


def _handler(server: OpenAITestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet test output
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            if self.path.rstrip("/") != "/v1/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            # in flight: from the request read to its answer computed (counted down before the
            # answer is sent, so a client's next request never overlaps its previous one)
            server.track(+1)
            try:
                threading.Event().wait(server.delay_s)
                answer = server.complete(body)
            finally:
                server.track(-1)
            self._send(*answer)

        def _send(self, status: int, doc: dict[str, Any]) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler
