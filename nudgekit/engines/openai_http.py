"""One JSON POST under an overall deadline, with bounded retries and scrubbed one-line errors.

The transport behind `OpenAIEngine`. It uses the standard library's `http.client` (not
`requests`) because enforcing a deadline needs the socket: a per-read timeout never fires against
a server that sends one byte every 0.5 s, whether it drips the body or the status line. Here a
watchdog timer shuts the socket down when the deadline passes, whatever the exchange is doing
(sending, waiting for the status line, reading headers or body), and every read is also given at
most the time left. Proxy variables from the environment are not used: the connection is direct.

Failures become one `NudgekitError` line:

- ``unreachable at URL (connection refused | cannot resolve host ... | no answer to connect
  within N s)`` and ``connection to URL lost before a complete answer (...)``: retried.
- ``URL timed out after N s``: the deadline passed; not retried (the budget is spent).
- ``URL answered HTTP <status>: <excerpt of the server's error>``: retried for 429 and 5xx only.
- ``malformed answer from URL: the body is not JSON: <excerpt>``: never retried (the engine
  reports a wrongly shaped JSON answer the same way).

Worst case: a request never takes longer than `timeout_s`, retries and backoff included (retries
stop when the next backoff would cross the deadline). A refused port fails after
`max_retries` backoffs (0.5 s, 1 s, ...: 1.5 s with the defaults); an unanswered connect after
`(max_retries + 1) * connect_timeout_s` plus backoffs, capped by `timeout_s`.

Every message and log line is scrubbed of the API key, of secrets in the URL (password, query
values), of credential values in the environment (`nudgekit.tracking.redact.secret_values`) and of
anything after ``Bearer``/``Basic``, before it is raised or logged, so a server that echoes the
Authorization header cannot leak it.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from nudgekit.errors import NudgekitError
from nudgekit.tracking.redact import REDACTED, scrub, secret_values

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BODY_BYTES = 256 << 20  # a larger answer is a broken server, not a completion
EXCERPT_CHARS = 200
BACKOFF_S = 0.5  # the first pause between attempts (read at call time: tests shorten it)
_AUTH_VALUE = re.compile(r"\b(Bearer|Basic)\s+[^\s\"',;)}\]]+", re.IGNORECASE)


@dataclass(frozen=True)
class Policy:
    """How long one request may take and when it is retried.

    Args:
        timeout_s: overall deadline for the request: every attempt and backoff together.
        connect_timeout_s: limit on each TCP (and TLS) connect.
        max_retries: retries after connection errors, 429 and 5xx (the first pause between
            attempts is `BACKOFF_S`; it doubles after each one).
    """

    timeout_s: float
    connect_timeout_s: float
    max_retries: int


class Scrubber:
    """Turns any text into one secret-free line.

    Args:
        secrets: values to remove besides the environment's credentials (API key, URL secrets).
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found = {s for s in secrets if s and len(s) >= 4} | set(secret_values())
        self.secrets = tuple(sorted(found, key=len, reverse=True))

    def __call__(self, text: str, limit: int | None = None) -> str:
        """Scrub `text`, collapse it to one line and cut it to `limit` characters."""
        text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", scrub(text, self.secrets))
        text = " ".join(text.split())  # scrubbed before cutting: a half key is still a key
        if limit is not None and len(text) > limit:
            text = text[: limit - 3] + "..."
        return text

    def error(self, message: str, limit: int | None = None) -> NudgekitError:
        """A `NudgekitError` carrying `message` as one scrubbed line (cut to `limit`)."""
        return NudgekitError(self(message, limit))


class Target:
    """Where requests go: the parsed URL, a secret-free form for messages, and URL credentials.

    Args:
        url: the full endpoint URL (may carry ``user:password@`` and a query string).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # a non-numeric or out-of-range port
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            shown = Scrubber([parts.password, *(v for _, v in parse_qsl(parts.query))])(url)
            raise NudgekitError(
                f"openai engine: base_url must look like http(s)://host[:port]/..., got {shown!r}"
            )
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = self.host if ":" not in self.host else f"[{self.host}]"
        netloc += f":{self.port}" if self.port else ""
        self.display = f"{parts.scheme}://{netloc}{parts.path}"  # no password, no query
        self.username, self.password = parts.username, parts.password
        self.secrets = [self.password or "", *(v for _, v in parse_qsl(parts.query))]

    def basic_auth(self) -> str | None:
        """An Authorization header value for ``user:password@`` in the URL, if any."""
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        """A new (unconnected) connection whose connect is bounded by `timeout`."""
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)


class _Unreachable(Exception):
    """The connection could not be made: refused, unresolvable, silent. Retryable."""

    template = "unreachable at {url} ({why})"


class _Lost(_Unreachable):
    """The connection broke before a complete answer came back. Retryable."""

    template = "connection to {url} lost before a complete answer ({why})"


class _TimedOut(Exception):
    """The deadline passed."""


def post_json(
    target: Target,
    body: dict[str, Any],
    headers: dict[str, str],
    policy: Policy,
    scrubber: Scrubber,
    label: str,
) -> Any:
    """POST `body` as JSON and return the decoded JSON of a 200 answer.

    Args:
        target: the endpoint.
        body: the JSON payload.
        headers: extra request headers (e.g. Authorization).
        policy: deadline and retry policy.
        scrubber: removes secrets from every message and log line.
        label: prefix of every message, e.g. ``"openai engine: request 3"``.

    Returns:
        The parsed JSON document (any JSON type; the caller checks its shape).

    Raises:
        NudgekitError: one scrubbed line (see the module docstring for the kinds).
    """
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json", **headers}
    where = f"{label}: {target.display}"
    start = time.monotonic()
    deadline = start + policy.timeout_s
    for attempt in range(policy.max_retries + 1):
        try:
            status, raw = _attempt(target, data, headers, deadline, policy.connect_timeout_s)
        except _TimedOut:
            raise scrubber.error(
                f"{where} timed out after {policy.timeout_s:g} s without a complete answer "
                "(engine timeout_s; raise it for long generations)"
            ) from None
        except _Unreachable as exc:
            problem, retryable = exc.template.format(url=target.display, why=exc), True
        else:
            if status == 200:
                return _decode(raw, f"{label}: malformed answer from {target.display}", scrubber)
            problem = f"{target.display} answered HTTP {status}: {_excerpt(raw, scrubber)}"
            retryable = status in RETRY_STATUS
        pause = BACKOFF_S * 2**attempt
        if not retryable or attempt == policy.max_retries or time.monotonic() + pause >= deadline:
            tries = f" ({attempt + 1} attempts in {time.monotonic() - start:.1f} s)"
            raise scrubber.error(f"{label}: {problem}{tries if attempt else ''}") from None
        log.warning("%s", scrubber(f"{label}: {problem}; retrying in {pause:g} s", 400))
        time.sleep(pause)
    raise AssertionError("unreachable")  # the loop always returns or raises


def _attempt(
    target: Target, data: bytes, headers: dict[str, str], deadline: float, connect_s: float
) -> tuple[int, bytes]:
    """One exchange under a watchdog; returns (status, body bytes)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _TimedOut
    conn = target.connection(timeout=min(connect_s, left))
    watchdog = _Watchdog(left)
    try:
        _connect(conn, connect_s, deadline)
        watchdog.guard(conn.sock)
        conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))  # no single read outlives it
        conn.request("POST", target.path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, _read_body(resp)
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.expired.is_set() or isinstance(exc, TimeoutError):
            raise _TimedOut from None
        raise _Lost(_describe(exc)) from None
    finally:
        watchdog.cancel()
        conn.close()


class _Watchdog:
    """Shuts a socket down when a deadline passes, waking any read or write blocked on it.

    Args:
        seconds: time until the deadline.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = threading.Event()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def guard(self, sock: socket.socket) -> None:
        """Watch `sock` (the connection may drop its own reference to it early)."""
        self._sock = sock
        if self.expired.is_set():  # fired while connecting, before there was a socket to stop
            raise _TimedOut

    def cancel(self) -> None:
        """Stop watching (the exchange is over)."""
        self._timer.cancel()

    def _fire(self) -> None:
        self.expired.set()
        sock = self._sock
        if sock is not None:
            try:  # the plain-socket shutdown, also under TLS: it wakes the blocked thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


def _connect(conn: http.client.HTTPConnection, connect_s: float, deadline: float) -> None:
    """Open the connection, classifying failures as unreachable (or timed out)."""
    try:
        conn.connect()
    except socket.gaierror as exc:
        raise _Unreachable(f"cannot resolve host {conn.host!r}: {exc.strerror}") from None
    except ConnectionRefusedError:
        raise _Unreachable("connection refused") from None
    except OSError as exc:
        if time.monotonic() >= deadline - 0.01:  # the connect was cut short by the deadline
            raise _TimedOut from None
        if isinstance(exc, TimeoutError):
            raise _Unreachable(f"no answer to connect within {connect_s:g} s") from None
        raise _Unreachable(_describe(exc)) from None


def _read_body(resp: http.client.HTTPResponse) -> bytes:
    """The whole body, checked against Content-Length and `MAX_BODY_BYTES`."""
    chunks, size = [], 0
    while chunk := resp.read1(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise http.client.HTTPException(f"answer larger than {MAX_BODY_BYTES >> 20} MiB")
    expected = resp.getheader("Content-Length")
    if expected and expected.isdigit() and size < int(expected):
        raise http.client.IncompleteRead(b"", int(expected) - size)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode(raw: bytes, where: str, scrubber: Scrubber) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise scrubber.error(f"{where}: the body is not JSON: {_excerpt(raw, scrubber)}") from None


def _excerpt(raw: bytes, scrubber: Scrubber) -> str:
    """A short, scrubbed, one-line excerpt of a body: its JSON error message when there is one."""
    text = raw.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return scrubber(text, EXCERPT_CHARS) or "(empty body)"
    text = error_text(doc["error"]) if isinstance(doc, dict) and "error" in doc else text
    return scrubber(text, EXCERPT_CHARS) or "(empty body)"


def error_text(err: Any) -> str:
    """The message of an OpenAI-style ``"error"`` value (an object with `message`, or anything).

    Args:
        err: the value under ``"error"`` in a JSON answer.

    Returns:
        The message string, or the value as JSON; not yet scrubbed.
    """
    if isinstance(err, dict) and "message" in err:
        err = err["message"]
    return err if isinstance(err, str) else json.dumps(err)
