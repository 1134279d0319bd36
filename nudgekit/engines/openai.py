"""`OpenAIEngine`: the engine contract over any OpenAI-compatible `/v1/completions` server.

Made for `vllm serve` (and anything speaking the same dialect). One HTTP request per
`GenerationRequest` (`n` samples each), sent concurrently from a small thread pool.

What comes back, and from where:

- token ids: every request asks for `logprobs=1`, and vLLM's `return_tokens_as_token_ids` turns
  every returned token into `token_id:N`;
  with `vllm_extensions=False` (a plain OpenAI server) ids come from `tokenizer`, when given,
  else they are empty.
- log-probs: the server's `token_logprobs`. vLLM's default (`logprobs_mode=raw_logprobs`) scores
  tokens at temperature 1, so at T != 1 they differ from the `hf` engine's `log_softmax(logits/T)`.
- finish reasons: "length" stays; "stop" becomes "stop" when vLLM's `stop_reason` names a stop
  string and "eos" when it is null (EOS); without `stop_reason` it is "stop" if the request had
  stop strings, else "eos".
- seeds: passed through as `seed` (the server decides what it guarantees).

The API key comes from the environment variable named by `api_key_env` and is never logged.

Reliability (`nudgekit.engines.openai_http` has the transport and the details):

- every request has one overall deadline, `timeout_s` (60 s by default), covering connect, send,
  waiting, reading and all retries: a server that stalls or drips one byte at a time fails with
  "timed out after 60 s"; `connect_timeout_s` (5 s) bounds each connect;
- retries (`max_retries`, 2) only after connection errors, 429 and 5xx, with 0.5 s, 1 s, ...
  backoff inside the deadline; never after other 4xx, a timeout or a malformed answer. With the
  defaults a refused port fails in ~1.5 s, a silent host in ~17 s, a stalling server in 60 s;
- when one request of a batch fails, queued requests are cancelled, so a batch fails in about one
  deadline too;
- a 200 answer must be well formed: a JSON object with `n` choices, each with a string `text`
  (`"text": null` or a missing text is an error, never `Sample.text=None` or a silent ""), and
  log-prob fields of the right types and lengths;
- every failure is one `NudgekitError` line, scrubbed of the API key, URL secrets and credential
  values from the environment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nudgekit.engines.base import GenerationRequest, GenerationResult, Sample
from nudgekit.engines.openai_http import Policy, Scrubber, Target, error_text, post_json
from nudgekit.errors import NudgekitError


class OpenAIEngine:
    """Generate through an OpenAI-compatible completions endpoint.

    Args:
        base_url: server root, with or without the trailing `/v1` (e.g. `http://127.0.0.1:8000`).
        model: the served model name.
        api_key_env: environment variable holding the API key (unset -> no auth header).
        timeout_s: overall deadline of one request, retries included.
        connect_timeout_s: limit on each connect.
        max_concurrency: requests in flight at once.
        max_retries: retries on connection errors, 429 and 5xx (with 0.5 s, 1 s, ... backoff).
        vllm_extensions: send vLLM's `return_tokens_as_token_ids` (needed for exact token ids).
        tokenizer: optional tokenizer for prompt ids and, without vLLM extensions, token ids.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_concurrency: int = 8,
        max_retries: int = 2,
        vllm_extensions: bool = True,
        tokenizer: Any = None,
    ) -> None:
        if not (timeout_s > 0 and connect_timeout_s > 0 and max_retries >= 0):
            raise NudgekitError(
                "openai engine: timeout_s and connect_timeout_s must be > 0 and max_retries >= 0, "
                f"got {timeout_s}, {connect_timeout_s}, {max_retries}"
            )
        parts = urlsplit(base_url)
        path = parts.path.rstrip("/")
        path = (path if path.endswith("/v1") else path + "/v1") + "/completions"
        self.url = urlunsplit(parts._replace(path=path))
        self.target = Target(self.url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_concurrency = max(1, max_concurrency)
        self.max_retries = max_retries
        self.vllm_extensions = vllm_extensions
        self.tokenizer = tokenizer

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Send every request (concurrently) and parse the answers in request order.

        The first failure stops the batch: requests not yet started are skipped, the ones in
        flight finish (each within its deadline), and the failure is raised.
        """
        failed = threading.Event()

        def run(req: GenerationRequest, index: int) -> GenerationResult:
            if failed.is_set():  # a request before this one failed: the batch is lost anyway
                raise _Skipped
            try:
                return self._one(req, index)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = [pool.submit(run, req, i) for i, req in enumerate(requests)]
            # in order: a skipped request comes after every started one, so the real error wins
            return [f.result() for f in futures]

    def payload(self, req: GenerationRequest) -> dict[str, Any]:
        """The JSON body for one request."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": req.prompt,
            "n": req.n,
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if req.seed is not None:
            body["seed"] = req.seed
        # Always ask for log-probs: the `tokens` list is where the sampled token ids come back.
        body["logprobs"] = 1  # the sampled token plus the top-1 alternative
        if self.vllm_extensions:
            body["return_tokens_as_token_ids"] = True
        return body

    def _one(self, req: GenerationRequest, index: int) -> GenerationResult:
        label = f"openai engine: request {index}"
        key = os.environ.get(self.api_key_env)
        scrubber = Scrubber([key, *self.target.secrets])
        auth = f"Bearer {key}" if key else self.target.basic_auth()
        headers = {"Authorization": auth} if auth else {}
        policy = Policy(self.timeout_s, self.connect_timeout_s, self.max_retries)
        data = post_json(self.target, self.payload(req), headers, policy, scrubber, label)
        try:
            choices = _choices(data, req.n)
            return GenerationResult(
                prompt_ids=self._prompt_ids(req, choices[0]),
                samples=[self._sample(c, req, f"choice {i}") for i, c in enumerate(choices)],
            )
        except _Malformed as exc:
            raise scrubber.error(
                f"{label}: malformed answer from {self.target.display}: {exc}", limit=400
            ) from None

    def _prompt_ids(self, req: GenerationRequest, choice: dict[str, Any]) -> list[int]:
        if not isinstance(req.prompt, str):
            return list(req.prompt)
        ids = _list_of(choice, "prompt_token_ids", _is_int, "ints", "choice 0")
        if ids:  # vLLM with return_token_ids
            return ids
        if self.tokenizer is not None:
            return self.tokenizer(req.prompt, add_special_tokens=False).input_ids
        return []

    def _sample(self, choice: dict[str, Any], req: GenerationRequest, where: str) -> Sample:
        lp = choice.get("logprobs")
        if lp is None:
            lp = {}
        elif not isinstance(lp, dict):
            raise _Malformed(f'{where}: "logprobs" is {_kind(lp)}, expected an object or null')
        tokens = _list_of(lp, "tokens", _is_str, "strings", where)
        ids = _list_of(choice, "token_ids", _is_int, "ints", where)
        ids = ids or [self._token_id(t, where) for t in tokens]
        sample = Sample(
            token_ids=[i for i in ids if i is not None],
            text=_text(choice, where),
            finish_reason=_finish_reason(choice, req),
        )
        if req.logprobs:
            sample.logprobs = [
                float(x) for x in _list_of(lp, "token_logprobs", _is_num, "numbers", where)
            ]
            _same_length(sample.logprobs, ids, "token_logprobs", where)
        if req.top_logprobs:
            tops = [max(d.items(), key=lambda kv: kv[1]) for d in _top_logprobs(lp, where)]
            sample.top_token_ids = [self._token_id(t, where) for t, _ in tops]
            sample.top_logprobs = [float(v) for _, v in tops]
            _same_length(tops, ids, "top_logprobs", where)
        return sample

    def _token_id(self, token: str, where: str) -> int | None:
        if token.startswith("token_id:"):
            try:
                return int(token[len("token_id:") :])
            except ValueError:
                raise _Malformed(
                    f'{where}: "logprobs.tokens" item {token!r} is not a token id'
                ) from None
        if self.tokenizer is not None:
            return self.tokenizer.convert_tokens_to_ids(token)
        return None


def _finish_reason(choice: dict[str, Any], req: GenerationRequest) -> str:
    reason = choice.get("finish_reason")
    if reason == "length":
        return "length"
    if "stop_reason" in choice:
        return "stop" if isinstance(choice["stop_reason"], str) else "eos"
    return "stop" if req.stop else "eos"


class _Skipped(Exception):
    """A request not sent because an earlier one of its batch failed (never surfaces)."""


class _Malformed(Exception):
    """A 200 answer of the wrong shape (the message names the field)."""


def _choices(data: Any, n: int) -> list[dict[str, Any]]:
    """The `n` choice objects of a completions answer, in `index` order."""
    if not isinstance(data, dict):
        raise _Malformed(f"the body is a JSON {_kind(data)}, expected an object")
    choices = data.get("choices")
    if not isinstance(choices, list):
        why = f": {error_text(data['error'])}" if "error" in data else ""
        raise _Malformed(f'no "choices" list{why}')
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict) or not _is_int(choice.get("index", 0)):
            raise _Malformed(f"choice {i} is not an object with an integer index")
    if len(choices) != n:
        raise _Malformed(f"{len(choices)} choices, expected {n}")
    return sorted(choices, key=lambda c: c.get("index", 0))


def _text(choice: dict[str, Any], where: str) -> str:
    """The completion text; null or missing is an error (never `Sample.text=None`)."""
    if "text" not in choice:
        raise _Malformed(f'{where}: "text" is missing')
    text = choice["text"]
    if not isinstance(text, str):
        raise _Malformed(f'{where}: "text" is {_kind(text)}, expected a string')
    return text


def _list_of(
    obj: dict[str, Any], key: str, ok: Callable[[Any], bool], what: str, where: str
) -> list[Any]:
    """`obj[key]` as a list whose items all pass `ok`; absent or null gives []."""
    value = obj.get(key)
    if value is None:
        return []
    name = f"logprobs.{key}" if key in ("tokens", "token_logprobs", "top_logprobs") else key
    if not isinstance(value, list):
        raise _Malformed(f'{where}: "{name}" must be a list of {what}, got {_kind(value)}')
    bad = [v for v in value if not ok(v)]
    if bad:
        raise _Malformed(f'{where}: "{name}" must be a list of {what}, got item {_show(bad[0])}')
    return value


def _top_logprobs(lp: dict[str, Any], where: str) -> list[dict[str, float]]:
    def ok(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(_is_num(v) for v in d.values())

    return _list_of(lp, "top_logprobs", ok, "non-empty {token: number} objects", where)


def _same_length(values: list[Any], ids: list[Any], key: str, where: str) -> None:
    if ids and len(values) != len(ids):
        raise _Malformed(
            f'{where}: "logprobs.{key}" has {len(values)} entries for {len(ids)} tokens'
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _kind(v: Any) -> str:
    """A JSON value's type name as a user reads it."""
    if v is None:
        return "null"
    return "object" if isinstance(v, dict) else type(v).__name__


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else f"{_kind(v)} {v!r}" if v is not None else "null"
