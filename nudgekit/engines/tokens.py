"""Token-level helpers of the engines: prompt text -> token ids as the model's tokenizer asks
(its start tokens (BOS), once), completion ids -> text in context, EOS and padding ids.

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

from nudgekit.errors import NudgekitError


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


def decode_continuation(tokenizer: Any, ids: list[int], anchor: list[int]) -> str:
    """Text of `ids` as it reads *after* other text, special tokens skipped.

    Decoding a completion on its own loses a SentencePiece word-start space (`▁there` decodes to
    "there" at the start of a string), so the completion is decoded behind a plain `anchor`
    token and the anchor's own text is cut off. Falls back to the plain decode when the anchor's
    text is not a prefix (a tokenizer that merges across the boundary).
    """
    if anchor:
        head = tokenizer.decode(anchor, skip_special_tokens=True)
        full = tokenizer.decode(anchor + ids, skip_special_tokens=True)
        if head and full.startswith(head):
            return full[len(head) :]
    return tokenizer.decode(ids, skip_special_tokens=True)


def default_eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The EOS ids of the model's generation config and of the tokenizer (an error if none)."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for source in (gen_eos, tokenizer.eos_token_id):
        if source is not None:
            ids.extend(source if isinstance(source, (list, tuple)) else [source])
    if not ids:
        raise NudgekitError(
            "hf engine: model and tokenizer define no EOS token (eos_token_ids=...)"
        )
    return ids


def pad_id(tokenizer: Any, eos_ids: list[int]) -> int:
    """The padding id: the tokenizer's own, else the first EOS (padded positions are masked
    out, so any valid id works)."""
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else int(eos_ids[0])
