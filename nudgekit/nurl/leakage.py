"""The hint leakage filter: does a hint give the gold answer away?

NuRL's hints must name the key idea, never the answer. A hint *leaks* when

1. the verifier accepts the hint text itself as a correct answer (`reason="verifier"`), or
2. the normalised gold answer appears in it (`reason="contains_answer"`): for a numeric answer,
   any number in the hint with the same value (``8``, ``8.0``, ``8,000`` vs ``8000``; a hint
   writing ``5-3`` contains ``3``); otherwise the normalised answer string as a substring of the
   normalised hint (whitespace, ``$``, ``\\left``/``\\right`` and ``\\boxed{}`` removed, lower
   case, ``\\dfrac``/``\\tfrac`` as ``\\frac``).

Empty hints (`reason="empty"`) and hints cut off by the token budget (`reason="truncated"`, set by
the generating source) are rejected too. `leak_reason` is the pure check; `LeakFilter` binds it to
a verifier and to the hint types it applies to.

Departure from the paper: the paper only says answer-revealing hints are removed. Here the rule
is explicit and conservative (a coincidental number equal to the answer, e.g. an intermediate
value, also rejects the hint), and the ``full``/``answer`` hint types of the ablation are exempt by
default, since they reveal the answer by design.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from fractions import Fraction

LEAK_REASONS = ("empty", "truncated", "verifier", "contains_answer")
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?(?![\d])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_BOXED = re.compile(r"\\boxed\s*\{(.*)\}", re.DOTALL)
_STRIP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\$|\s+")


def normalize_text(text: str) -> str:
    """Lower-case `text` with whitespace, `$`, `\\left`/`\\right` and thousands commas removed."""
    text = _THOUSANDS.sub("", str(text))
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _STRIP.sub("", text).lower()


def normalize_answer(answer: str) -> str:
    """A gold answer in comparable form: unboxed, `normalize_text`, no trailing period."""
    text = str(answer).strip()
    boxed = _BOXED.search(text)
    if boxed:
        text = boxed.group(1)
    return normalize_text(text).rstrip(".")


def as_number(text: str) -> float | None:
    """The value of a plain number (``"8"``, ``"-2.5"``, ``"3/4"``), else None."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None


def contains_answer(text: str, answer: str) -> bool:
    """Whether the normalised `answer` appears in `text` (numbers compared by value)."""
    norm = normalize_answer(answer)
    if not norm:
        return False
    value = as_number(norm)
    if value is not None and "/" not in norm:
        for match in _NUMBER.finditer(_THOUSANDS.sub("", str(text))):
            found = float(match.group())
            # "5-3" holds the number 3 as much as -3: a sign is only required for negative answers
            if found == value or (value >= 0 and -found == value):
                return True
        return False
    return norm in normalize_text(text)


def leak_reason(
    hint: str | None, answer: str, verifier: Callable[[str, str], float] | None = None
) -> str | None:
    """Why `hint` must be rejected for a problem with gold `answer`, or None if it is usable.

    Args:
        hint: the hint text.
        answer: the gold answer.
        verifier: `(completion, answer) -> float`; a score >= 1 on the hint text is a leak.

    Returns:
        "empty", "verifier", "contains_answer", or None.
    """
    if hint is None or not str(hint).strip():
        return "empty"
    if verifier is not None and float(verifier(hint, answer)) >= 1.0:
        return "verifier"
    if contains_answer(hint, answer):
        return "contains_answer"
    return None


class LeakFilter:
    """`leak_reason` bound to a verifier and to the hint types it applies to.

    Args:
        verifier: a verifier name for `nudgekit.rewards.load_verifier`, a callable, or None
            (substring/number check only).
        check_contains: also reject hints that contain the normalised answer.
        exempt_types: hint types that reveal the answer by design (never filtered for leaks;
            still rejected when empty).
    """

    def __init__(
        self,
        verifier: str | Callable[[str, str], float] | None = None,
        check_contains: bool = True,
        exempt_types: Sequence[str] = ("full", "answer"),
    ) -> None:
        if isinstance(verifier, str):
            from nudgekit.rewards import load_verifier

            verifier = load_verifier(verifier)
        self.verifier = verifier
        self.check_contains = check_contains
        self.exempt_types = tuple(exempt_types)

    def __call__(self, hint: str | None, answer: str, hint_type: str = "abstract") -> str | None:
        """The rejection reason for `hint`, or None when it may be used."""
        if hint is None or not str(hint).strip():
            return "empty"
        if hint_type in self.exempt_types:
            return None
        reason = leak_reason(hint, answer, self.verifier)
        if reason == "contains_answer" and not self.check_contains:
            return None
        return reason
