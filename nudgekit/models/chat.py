"""Chat-template application with a documented plain-text fallback.

A tokenizer that ships a chat template uses it. One without (base models, tiny-world models built
without a template) gets the fallback below, one turn per line and an open assistant turn:

    System: You are terse.
    User: What is 2+2?
    Assistant:

The fallback adds no special tokens; the engine tokenises prompts without adding any either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nudgekit.errors import NudgekitError

_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def _check_messages(messages: Sequence[Mapping[str, str]]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise NudgekitError("chat messages: expected a list of {'role', 'content'} dicts")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
            raise NudgekitError(f"chat message {i}: needs 'role' and 'content' keys")
        if msg["role"] not in _ROLES:
            raise NudgekitError(
                f"chat message {i}: role {msg['role']!r} is not one of {sorted(_ROLES)}"
            )


def plain_chat_template(
    messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
) -> str:
    """Render messages as "Role: content" lines, ending in "Assistant:" when asked."""
    _check_messages(messages)
    lines = [f"{_ROLES[m['role']]}: {m['content']}" for m in messages]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)


def apply_chat_template(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
) -> str:
    """Render a conversation to prompt text.

    Args:
        tokenizer: a `transformers` tokenizer; its own `chat_template` wins when present.
        messages: `[{"role": "system"|"user"|"assistant", "content": str}, ...]`.
        add_generation_prompt: end with an open assistant turn.

    Returns:
        The prompt text (tokenise it without adding special tokens).
    """
    _check_messages(messages)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return plain_chat_template(messages, add_generation_prompt)
