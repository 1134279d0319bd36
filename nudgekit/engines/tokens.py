"""Prompt text -> token ids as the model's tokenizer asks: its start tokens (BOS), once.

Chat templates of some models write the BOS into the prompt text (Llama-2/3, Gemma); base prompts
are plain text, and a model like Gemma reads badly without its BOS. So every prompt is encoded
without special tokens and then given the tokenizer's start tokens unless the text already began
with them: exactly `tokenizer(text)` for plain text, and no second BOS after a template's. Only
the start of a prompt gets them (continuation text re-tokenised after a prompt is part of the
same string), and an end token a tokenizer might append is never added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def start_ids(tokenizer: Any) -> list[int]:
    """The ids `tokenizer` puts before a text it encodes with special tokens ([] for none)."""
    plain = list(tokenizer("a", add_special_tokens=False).input_ids)
    full = list(tokenizer("a", add_special_tokens=True).input_ids)
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i]
    return []


def with_start(start: Sequence[int], ids: Sequence[int]) -> list[int]:
    """`ids` (a prompt encoded without special tokens) behind `start`, unless already there."""
    ids = list(ids)
    if not start or ids[: len(start)] == list(start):
        return ids
    return [*start, *ids]


def prompt_ids(tokenizer: Any, text: str, start: Sequence[int] | None = None) -> list[int]:
    """The ids of prompt `text`, with the tokenizer's start tokens once (see module docstring).

    Args:
        tokenizer: a `transformers` tokenizer.
        text: the prompt.
        start: `start_ids(tokenizer)`, when the caller keeps it (it costs two encodes).
    """
    start = start_ids(tokenizer) if start is None else start
    return with_start(start, tokenizer(text, add_special_tokens=False).input_ids)


def request_prompt_ids(
    index: int, request: Any, tokenizer: Any, start: Sequence[int], vocab: int
) -> list[int]:
    """A `GenerationRequest`'s checked prompt ids (text encoded with `prompt_ids`).

    Args:
        index: the request's position (named in errors).
        request: the `GenerationRequest`.
        tokenizer: encodes a text prompt.
        start: the tokenizer's start ids (`start_ids`).
        vocab: ids must lie in ``[0, vocab)``.

    Returns:
        The prompt ids.

    Raises:
        NudgekitError: bad n / max_new_tokens / temperature / top_p, ids out of range, or an empty
            prompt.
    """
    from nudgekit.errors import NudgekitError

    where = f"request {index}"
    if request.n < 1 or request.max_new_tokens < 1:
        raise NudgekitError(f"{where}: n and max_new_tokens must be >= 1")
    if request.temperature < 0 or not 0 < request.top_p <= 1:
        raise NudgekitError(f"{where}: need temperature >= 0 and 0 < top_p <= 1")
    if isinstance(request.prompt, str):
        ids = prompt_ids(tokenizer, request.prompt, start)
    else:
        ids = [int(t) for t in request.prompt]
        if any(not 0 <= t < vocab for t in ids):
            raise NudgekitError(f"{where}: prompt ids must lie in [0, {vocab})")
    if not ids:
        raise NudgekitError(f"{where}: empty prompt")
    return list(ids)
