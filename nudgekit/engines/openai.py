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
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nudgekit.engines.base import GenerationRequest, GenerationResult, Sample
from nudgekit.errors import NudgekitError

_RETRY_STATUS = {429, 500, 502, 503, 504}


class OpenAIEngine:
    """Generate through an OpenAI-compatible completions endpoint.

    Args:
        base_url: server root, with or without the trailing `/v1` (e.g. `http://127.0.0.1:8000`).
        model: the served model name.
        api_key_env: environment variable holding the API key (unset -> no auth header).
        timeout_s: per-HTTP-request timeout.
        max_concurrency: requests in flight at once.
        max_retries: retries on connection errors, 429 and 5xx (with short backoff).
        vllm_extensions: send vLLM's `return_tokens_as_token_ids` (needed for exact token ids).
        tokenizer: optional tokenizer for prompt ids and, without vLLM extensions, token ids.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_concurrency: int = 8,
        max_retries: int = 2,
        vllm_extensions: bool = True,
        tokenizer: Any = None,
    ) -> None:
        root = base_url.rstrip("/")
        self.url = (root if root.endswith("/v1") else root + "/v1") + "/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_concurrency = max(1, max_concurrency)
        self.max_retries = max_retries
        self.vllm_extensions = vllm_extensions
        self.tokenizer = tokenizer

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Send every request (concurrently) and parse the answers in request order."""
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(self._one, requests, range(len(requests))))

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
        data = self._post(self.payload(req), index)
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != req.n:
            raise NudgekitError(
                f"openai engine: request {index}: server returned {len(choices)} choices, "
                f"expected {req.n}"
            )
        return GenerationResult(
            prompt_ids=self._prompt_ids(req, choices[0]),
            samples=[self._sample(c, req) for c in choices],
        )

    def _post(self, body: dict[str, Any], index: int) -> dict[str, Any]:
        import requests

        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        where = f"openai engine: {self.url} (request {index})"
        for attempt in range(self.max_retries + 1):
            try:
                resp = requests.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
            except requests.RequestException as exc:
                if attempt == self.max_retries:
                    raise NudgekitError(f"{where}: unreachable ({type(exc).__name__})") from None
            else:
                if resp.status_code == 200:
                    return resp.json()
                if resp.status_code not in _RETRY_STATUS or attempt == self.max_retries:
                    raise NudgekitError(f"{where}: HTTP {resp.status_code}: {_error_text(resp)}")
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _prompt_ids(self, req: GenerationRequest, choice: dict[str, Any]) -> list[int]:
        if not isinstance(req.prompt, str):
            return list(req.prompt)
        if choice.get("prompt_token_ids"):  # vLLM with return_token_ids
            return list(choice["prompt_token_ids"])
        if self.tokenizer is not None:
            return self.tokenizer(req.prompt, add_special_tokens=False).input_ids
        return []

    def _sample(self, choice: dict[str, Any], req: GenerationRequest) -> Sample:
        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        ids = choice.get("token_ids") or [self._token_id(t) for t in tokens]
        sample = Sample(
            token_ids=[i for i in ids if i is not None],
            text=choice.get("text", ""),
            finish_reason=_finish_reason(choice, req),
        )
        if req.logprobs:
            sample.logprobs = [float(x) for x in lp.get("token_logprobs") or []]
        if req.top_logprobs:
            tops = [max(d.items(), key=lambda kv: kv[1]) for d in lp.get("top_logprobs") or []]
            sample.top_token_ids = [self._token_id(t) for t, _ in tops]
            sample.top_logprobs = [float(v) for _, v in tops]
        return sample

    def _token_id(self, token: str) -> int | None:
        if token.startswith("token_id:"):
            return int(token[len("token_id:") :])
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


def _error_text(resp: Any) -> str:
    try:
        err = resp.json().get("error", resp.text)
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except ValueError:
        text = resp.text
    return (text.strip().splitlines() or [""])[0][:200]
