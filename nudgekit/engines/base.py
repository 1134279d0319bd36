"""The generation-engine contract shared by every backend (hf, vllm, openai).

A backend takes a list of `GenerationRequest`s and returns one `GenerationResult` per request,
each holding `request.n` `Sample`s. Prompts are text or token ids; results always carry ids, text,
per-token log-probs of the sampled tokens (when asked) and a finish reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "eos"]


@dataclass
class GenerationRequest:
    """One prompt to sample from.

    Args:
        prompt: prompt text (tokenised by the engine) or exact prompt token ids.
        n: number of samples for this prompt.
        max_new_tokens: completion budget.
        temperature: 0 means greedy.
        top_p: nucleus mass (1.0 = off).
        stop: stop strings; the completion is cut before the first one and `finish_reason="stop"`.
        seed: per-request seed; the same seed gives the same samples.
        logprobs: return per-token log-probs of the sampled tokens.
        top_logprobs: also return the top-1 token id and log-prob at every position.
    """

    prompt: str | list[int]
    n: int = 1
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: bool = False


@dataclass
class Sample:
    """One completion.

    `token_ids` are the completion ids actually sampled (stop-string text trimmed from `text`
    but the ids kept up to and including the token that completed the stop string).
    """

    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    logprobs: list[float] | None = None  # [len(token_ids)]
    top_token_ids: list[int] | None = None  # [len(token_ids)] greedy token at each position
    top_logprobs: list[float] | None = None  # [len(token_ids)] its log-prob


@dataclass
class GenerationResult:
    """All samples for one request, plus the exact prompt ids the engine sampled with."""

    prompt_ids: list[int]
    samples: list[Sample]


@runtime_checkable
class Engine(Protocol):
    """Anything that turns requests into results."""

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]: ...
