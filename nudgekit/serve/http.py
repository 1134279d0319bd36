"""The HTTP layer: a standard-library `ThreadingHTTPServer` in front of a `Service`.

Routes: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /health`, `GET /v1/models`,
`GET /progress`. Every answer is JSON with a `Content-Length`, and the connection closes after
it (HTTP/1.0 style), so a shutdown never waits on an idle keep-alive connection. Every refusal
is an OpenAI-style `{"error": {"message", "type", "param", "code"}}` with a one-line message.
Handler threads are not daemons and the server joins them on close, so requests in flight at
shutdown are answered.
"""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nudgekit.serve.protocol import ApiError
from nudgekit.serve.service import Service

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 30.0  # a client that stops sending its request is dropped after this
GENERATION = {"/v1/completions": False, "/v1/chat/completions": True}  # path -> chat


class NudgingHTTPServer(ThreadingHTTPServer):
    """Holds the `Service`; joins its handler threads on close."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        super().__init__(address, Handler)
        self.service = service


class Handler(BaseHTTPRequestHandler):
    server: NudgingHTTPServer
    server_version = "nudgekit-serve/0.1"
    timeout = READ_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0].rstrip("/")
        service = self.server.service
        pages = {"/health": service.health, "/v1/models": service.models}
        pages["/progress"] = service.progress
        if path in pages:
            self._send(200, pages[path]())
        elif path in GENERATION:
            self._error(ApiError(405, f"{path} takes POST", kind="invalid_request_error"))
        else:
            self._error(ApiError(404, f"no route {path or '/'}", kind="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in GENERATION:
            self._error(ApiError(404, f"no route {path or '/'}", kind="not_found_error"))
            return
        start, status = time.perf_counter(), 200
        try:
            body = self._json_body()
            self._send(200, self.server.service.complete(body, GENERATION[path]))
        except ApiError as err:
            status = err.status
            self._error(err)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 in one line, logged whole
            log.exception("serve: %s failed", path)
            status = 500
            why = " ".join(str(exc).split())[:300]
            self._error(ApiError(500, f"internal error: {type(exc).__name__}: {why}",
                                 kind="server_error"))  # fmt: skip
        finally:
            self.server.service.record(status, time.perf_counter() - start)

    def _json_body(self) -> Any:
        limit = self.server.service.limits.max_body_bytes
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise ApiError(411, "a Content-Length header is required")
        size = int(length)
        if size > limit:
            self.close_connection = True  # the body is not read
            raise ApiError(413, f"the body is {size} bytes; this server allows at most {limit}")
        raw = self.rfile.read(size)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None

    def _error(self, err: ApiError) -> None:
        self._send(err.status, err.body())

    def _send(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError as exc:  # the client went away; nothing to tell it
            log.info("serve: client gone before the answer (%s)", exc)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s " + format, self.address_string(), *args)
