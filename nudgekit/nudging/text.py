"""Tokenizer glue for nudging: the only place the decoders touch token <-> text conversion.

The two models exchange *text*; each turns the shared text into its own ids with `encode`, and
turns the ids it generated back into text with `pieces`, which decodes every token in the context
of the tokens before it (SentencePiece tokenizers drop a token's leading space when it is decoded
alone; byte-level ones split a character over several tokens, and a piece holds a character back
until its last byte has arrived, so no U+FFFD for half a character ever enters the shared text).
A prompt gets its tokenizer's BOS once, at its start (`prompt_ids`, `engines.tokens`); the output
text is counted and re-tokenised after the prompt, never with special tokens of its own.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from nudgekit.engines.tokens import start_ids, with_start
from nudgekit.errors import NudgekitError
from nudgekit.inference.rows import common_prefix

CONTEXT_TOKENS = 4  # tokens of left context when decoding pieces


_CHECKS = 8  # texts on which the fast path is compared with `tokenizer(...)` before it is trusted
# id(tokenizer) -> (weak reference, agreeing checks so far or -1 once they disagreed)
_fast_ok: dict[int, tuple[weakref.ref, int]] = {}


def encode(tokenizer: Any, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`, exactly as `tokenizer(text, add_special_tokens=...)` gives them.

    The decoders encode the shared text every round, and `PreTrainedTokenizerFast.__call__`
    costs far more Python than its Rust backend's own call. The backend is used once it
    has agreed with `__call__` on the first few texts of that tokenizer (it never disagrees for
    the tokenizers we know; a tokenizer whose Python side adds behaviour falls back for good).
    """
    slow = lambda: list(tokenizer(text, add_special_tokens=add_special_tokens).input_ids)  # noqa: E731
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return slow()
    ref_to, state = _fast_ok.get(id(tokenizer), (None, 0))
    if ref_to is None or ref_to() is not tokenizer:  # new (or a recycled id): check again
        state = 0
    if state < 0:
        return slow()
    fast = backend.encode(text, add_special_tokens=add_special_tokens).ids
    if state < _CHECKS:
        ref = slow()
        _fast_ok[id(tokenizer)] = (weakref.ref(tokenizer), state + 1 if ref == fast else -1)
        return ref
    return list(fast)


def prompt_ids(tokenizer: Any, text: str, start: Sequence[int] | None = None) -> list[int]:
    """`encode(tokenizer, text)` behind the tokenizer's start tokens (its BOS), once: what a
    prompt (plus the output after it) is fed as. `start`: `start_ids(tokenizer)`, if kept."""
    start = start_ids(tokenizer) if start is None else start
    return with_start(start, encode(tokenizer, text))


REPLACEMENT = "\ufffd"  # what a tokenizer decodes bytes of an unfinished character to


class PieceStream:
    """The text each token adds after `context`, one token at a time (see `pieces`).

    A byte-level tokenizer decodes the first bytes of a character split over several tokens to
    U+FFFD, and the character itself once its last byte arrives. Trailing U+FFFD is therefore
    held back (the token's piece is "") until a later token completes it or follows it with
    other text: then the held text is emitted, as the decode has it. A stream that ends on
    unfinished bytes leaves them out.
    """

    def __init__(self, tokenizer: Any, context: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.ctx = list(context[-CONTEXT_TOKENS:])
        self.ids: list[int] = []
        self.prev = tokenizer.decode(self.ctx, skip_special_tokens=True).rstrip(REPLACEMENT)

    def add(self, token: int) -> str:
        self.ids.append(token)
        cur = self.tokenizer.decode(self.ctx + self.ids, skip_special_tokens=True)
        cur = cur.rstrip(REPLACEMENT)  # bytes of a character still to come, or nothing yet
        # decoding more tokens can rewrite the tail (a SentencePiece cleanup)
        cut = common_prefix(self.prev, cur) if not cur.startswith(self.prev) else len(self.prev)
        self.prev = cur
        return cur[cut:]


def pieces(tokenizer: Any, context: Sequence[int], ids: Sequence[int]) -> list[str]:
    """The text each of `ids` adds after `context` (special tokens decode to "").

    Joined, the pieces are the text of `ids` as it reads after `context`; a token's piece depends
    only on the tokens before it, so the pieces of a prefix of `ids` are a prefix of these.
    """
    stream = PieceStream(tokenizer, context)
    return [stream.add(i) for i in ids]


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The ids that end a model's turn: its generation config's EOS plus the tokenizer's."""
    ids: set[int] = set()
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for source in (gen, getattr(tokenizer, "eos_token_id", None)):
        if source is not None:
            ids.update(source if isinstance(source, (list, tuple)) else [source])
    if not ids:
        raise NudgekitError("nudging: a model and its tokenizer define no EOS token")
    return frozenset(int(i) for i in ids)


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two tokenizers map every token string to the same id (proxy tuning needs it)."""
    return a is b or a.get_vocab() == b.get_vocab()
