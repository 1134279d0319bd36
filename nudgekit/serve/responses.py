"""OpenAI-shaped answers built from `NudgeOutput`s, with stop strings applied server-side.

Every choice carries, next to the OpenAI fields, a `nudging` object: the spans `[start, end,
"nudge"|"base"]` of its text, the nudged span texts, the tokens each model wrote (each counted
with its author's tokenizer), the nudged-token share, the decoder's own stop reason and rounds.

`finish_reason`: "stop" when a stop string cut the text or the decoder ended the answer itself
(the nudging model's end of turn, repeated nudging words); "length" when the token budget or the
round limit ended it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from nudgekit.nudging.attribution import BASE, NUDGE, NudgeOutput, clip_spans

Counter = Callable[[str], int]


def cut_at_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where the first occurrence of any stop string starts (None: none occurs)."""
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def finish_reason(out: NudgeOutput, cut: bool) -> str:
    if cut:
        return "stop"
    return "length" if out.stop_reason in ("length", "rounds") else "stop"


def nudging_field(out: NudgeOutput, end: int, counters: dict[str, Counter]) -> dict[str, Any]:
    """The `nudging` extra of a choice whose text is `out.text[:end]`."""
    spans = clip_spans(out.spans, 0, end)
    text = out.text[:end]
    tokens = {NUDGE: 0, BASE: 0}
    if end == len(out.text):
        tokens = {NUDGE: out.nudge_tokens, BASE: out.base_tokens}
    else:
        for s in spans:
            tokens[s.source] += counters[s.source](text[s.start : s.end])
    total = tokens[NUDGE] + tokens[BASE]
    return {
        "spans": [[s.start, s.end, s.source] for s in spans],
        "nudged_spans": [text[s.start : s.end] for s in spans if s.source == NUDGE],
        "nudge_tokens": tokens[NUDGE],
        "base_tokens": tokens[BASE],
        "nudge_token_share": tokens[NUDGE] / total if total else 0.0,
        "stop_reason": out.stop_reason,
        "rounds": out.rounds,
    }


def choice(
    index: int,
    out: NudgeOutput,
    stop: Sequence[str],
    chat: bool,
    counters: dict[str, Counter],
) -> tuple[dict[str, Any], int]:
    """One choice object and its completion tokens (base tokenizer)."""
    cut = cut_at_stop(out.text, stop)
    end = len(out.text) if cut is None else cut
    text = out.text[:end]
    body: dict[str, Any] = {"index": index}
    if chat:
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["text"] = text
        body["logprobs"] = None  # a nudged text is no single model's sample
    body["finish_reason"] = finish_reason(out, cut is not None)
    body["nudging"] = nudging_field(out, end, counters)
    return body, counters[BASE](text)


def response(
    model: str,
    chat: bool,
    outputs: list[list[NudgeOutput]],
    stop: Sequence[str],
    prompt_tokens: int,
    counters: dict[str, Counter],
) -> dict[str, Any]:
    """The whole answer: choice `i * n + j` is sample `j` of question `i` (OpenAI's order)."""
    choices, completion_tokens = [], 0
    for outs in outputs:
        for out in outs:
            body, tokens = choice(len(choices), out, stop, chat, counters)
            choices.append(body)
            completion_tokens += tokens
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
