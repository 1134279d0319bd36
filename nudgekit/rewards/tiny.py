"""Verifiers for tiny-world answers.

`verify_tiny` is strict: the completion's last non-empty line must be exactly ``Answer: <int>``
(a model that keeps writing after its answer, or phrases it differently, scores 0). This is the
format the chat-aligned models and the policy are trained to produce.

`verify_tiny_lenient` is the format-aware parser used to separate format from reasoning: it
reads the first paragraph only (base models run on into a new document after a blank line or a
new ``Question:``) and takes its last integer, whatever phrase surrounds it.

Both never raise: malformed input scores 0.0.
"""

from __future__ import annotations

import re

_STRICT = re.compile(r"^Answer: (-?\d+)$")
_INT = re.compile(r"-?\d+")
_DOC_BREAK = re.compile(r"\n\s*\n|Question:|<\|")


def _same_int(found: str, answer: str) -> bool:
    try:
        return int(found) == int(str(answer).strip())
    except (TypeError, ValueError):
        return False


def strict_answer(completion: str) -> str | None:
    """The answer of a well-formatted completion, or None when the format is broken."""
    if not isinstance(completion, str):
        return None
    lines = [ln.strip() for ln in completion.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    m = _STRICT.match(lines[-1])
    return m.group(1) if m else None


def lenient_answer(completion: str) -> str | None:
    """The last integer of the first paragraph, or None when there is none."""
    if not isinstance(completion, str):
        return None
    head = _DOC_BREAK.split(completion.strip(), maxsplit=1)[0]
    found = _INT.findall(head)
    return found[-1] if found else None


def verify_tiny(completion: str, answer: str) -> float:
    """1.0 when the completion ends with the line ``Answer: <answer>``, else 0.0."""
    found = strict_answer(completion)
    return 1.0 if found is not None and _same_int(found, answer) else 0.0


def verify_tiny_lenient(completion: str, answer: str) -> float:
    """1.0 when the last integer of the first paragraph equals the answer, else 0.0."""
    found = lenient_answer(completion)
    return 1.0 if found is not None and _same_int(found, answer) else 0.0


def is_well_formatted(completion: str) -> bool:
    """Whether the completion follows the strict format (right or wrong)."""
    return strict_answer(completion) is not None
