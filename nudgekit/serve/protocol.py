"""The OpenAI request dialect the nudging server accepts, checked field by field.

`parse_request` turns a decoded JSON body of `/v1/completions` or `/v1/chat/completions` into a
`Job` (the questions plus the generation settings), or raises `ApiError` whose message is one
line naming the field (`param`), as OpenAI's own errors do. `Limits` holds the bounds.

The contract (see `nudgekit.serve`): both endpoints carry *questions*, not rendered prompts. A
completions `prompt` (a string, or a list of strings) is one question each; a chat request's
single user message is its question. The server renders each question for both models with its
configured prompt builders, exactly as the in-process nudging pipeline and eval do.

Fields clients send by habit and that change nothing here (`logprobs`, `user`, vLLM's
`return_tokens_as_token_ids`, ...) are ignored; fields whose meaning the server cannot honour
(`stream`, `echo`, `suffix`, `best_of` > n, a `logit_bias`, non-zero penalties, token-id
prompts) are refused, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_STOP = 16  # stop strings per request (OpenAI allows 4; lm-eval may send more)
MAX_STOP_CHARS = 200


class ApiError(Exception):
    """A request the server refuses: HTTP `status` and an OpenAI-style error object.

    Args:
        status: the HTTP status (400, 404, 413, 429, 503, 504, ...).
        message: one line saying what is wrong and what is allowed.
        param: the request field at fault, if any.
        kind: the OpenAI error `type`.
        code: an optional machine-readable code (`model_not_found`, ...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, " ".join(message.split()), param
        self.kind, self.code = kind, code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    Args:
        max_prompt_chars: characters of one question.
        max_prompt_tokens: tokens of one rendered prompt (either model's tokenizer).
        max_tokens: the largest `max_tokens` (also the default when a request sets none).
        max_n: the largest `n`.
        max_prompts: questions in one completions request.
        max_queued: questions queued or decoding at once; more are refused with 429.
        max_body_bytes: the largest request body; more is refused with 413.
        request_timeout_s: a request still unanswered after this gets 504.
    """

    max_prompt_chars: int = 8000
    max_prompt_tokens: int = 1024
    max_tokens: int = 512
    max_n: int = 8
    max_prompts: int = 64
    max_queued: int = 512
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 300.0


@dataclass
class Job:
    """One parsed request: its questions and how to decode them."""

    chat: bool
    questions: list[str]
    max_tokens: int
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


def parse_request(body: Any, chat: bool, model: str, limits: Limits) -> Job:
    """Check a decoded JSON body against the dialect and `limits`.

    Args:
        body: the decoded JSON.
        chat: the body came to `/v1/chat/completions`.
        model: the served model name (a request naming another gets 404).
        limits: the bounds.

    Returns:
        The `Job`.

    Raises:
        ApiError: the first problem found, as one line.
    """
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_kind(body)}")
    asked = body.get("model", model)
    if asked != model:
        raise ApiError(
            404,
            f"model {str(asked)[:100]!r} does not exist; this server serves {model!r}",
            "model",
            code="model_not_found",
        )
    _refuse_unsupported(body)
    questions = _messages(body.get("messages")) if chat else _prompts(body.get("prompt"), limits)
    for i, q in enumerate(questions):
        if len(q) > limits.max_prompt_chars:
            where = "messages" if chat else "prompt"
            raise ApiError(
                400,
                f"{where} {i} has {len(q)} characters; this server allows at most "
                f"{limits.max_prompt_chars}",
                where,
                code="context_length_exceeded",
            )
    tokens_key = (
        "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
    )
    n = _int(body, "n", 1, 1, limits.max_n)
    best_of = _int(body, "best_of", n, 1, limits.max_n)
    if best_of != n:
        raise ApiError(400, f"best_of={best_of} is not supported (only best_of == n)", "best_of")
    return Job(
        chat=chat,
        questions=questions,
        max_tokens=_int(body, tokens_key, limits.max_tokens, 1, limits.max_tokens),
        n=n,
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
        top_p=_top_p(body),
        stop=_stop(body.get("stop")),
        seed=_seed(body.get("seed")),
    )


def _refuse_unsupported(body: dict) -> None:
    for key, why in (
        ("stream", "streaming is not supported"),
        ("echo", "echo is not supported (no log-probs of a nudged text)"),
        ("suffix", "suffix is not supported"),
        ("tools", "tools are not supported"),
    ):
        if body.get(key):
            raise ApiError(400, f"{key}: {why}", key)
    if body.get("logit_bias"):
        raise ApiError(400, "logit_bias is not supported", "logit_bias")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body, key, 0.0, -2.0, 2.0) != 0.0:
            raise ApiError(400, f"{key} is not supported (only 0)", key)


def _prompts(prompt: Any, limits: Limits) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > limits.max_prompts:
            raise ApiError(
                400,
                f"prompt has {len(prompt)} items; this server allows at most {limits.max_prompts}",
                "prompt",
            )
        return list(prompt)
    if prompt is None:
        raise ApiError(400, "prompt is required (a string or a list of strings)", "prompt")
    if (
        isinstance(prompt, list)
        and prompt
        and all(_is_int(t) or isinstance(t, list) for t in prompt)
    ):
        raise ApiError(400, "token-id prompts are not supported: send text", "prompt")
    raise ApiError(
        400,
        f"prompt must be a string or a non-empty list of strings, got {_kind(prompt)}",
        "prompt",
    )


def _messages(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content}", "messages")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("content"), str)):
            raise ApiError(
                400, f"messages[{i}] must be an object with a string content", "messages"
            )
    if len(messages) != 1 or messages[0].get("role") != "user":
        roles = [m.get("role") for m in messages]
        raise ApiError(
            400,
            f"messages must be exactly one user message (the question; the server's prompt "
            f"builders add the instruction and templates), got roles {roles}",
            "messages",
        )
    return [messages[0]["content"]]


def _int(body: dict, key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if not _is_int(value):
        raise ApiError(400, f"{key} must be an integer, got {_show(value)}", key)
    if not lo <= value <= hi:
        raise ApiError(400, f"{key}={value} is out of range: this server allows {lo}..{hi}", key)
    return value


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not (is_number(value) and math.isfinite(value)):
        raise ApiError(400, f"{key} must be a number, got {_show(value)}", key)
    if not lo <= value <= hi:
        raise ApiError(400, f"{key}={value} is out of range: this server allows {lo}..{hi}", key)
    return float(value)


def _top_p(body: dict) -> float:
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:
        raise ApiError(400, "top_p=0 is out of range: this server allows (0, 1]", "top_p")
    return top_p


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        raise ApiError(
            400, f"stop must be a string or a list of strings, got {_kind(stop)}", "stop"
        )
    if len(stops) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(
            400,
            f"stop: at most {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters",
            "stop",
        )
    return [s for s in stops if s]


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if not _is_int(seed):
        raise ApiError(400, f"seed must be an integer, got {_show(seed)}", "seed")
    return seed


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A JSON number (bools are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), "a number" if is_number(v) else type(v).__name__
    )


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, (dict, list)) else _kind(v)
    return text[:60]
