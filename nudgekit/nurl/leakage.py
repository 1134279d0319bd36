"""The hint leakage filter: does a hint give the gold answer away?

NuRL's hints must name the key idea, never the answer. A hint *leaks* when

1. the verifier accepts the hint text itself as a correct answer (`reason="verifier"`), or
2. the hint states the gold answer (`reason="contains_answer"`): for a numeric answer, a number
   of the same value (``8``, ``8.0``, ``8,000`` vs ``8000``) right after ``=``, "is", "equals",
   "answer", "result", "gives", "get(s)" or "becomes"; otherwise the normalised answer string as
   a substring of the normalised hint (whitespace, ``$``, ``\\left``/``\\right`` and
   ``\\boxed{}`` removed, lower case, ``\\dfrac``/``\\tfrac`` as ``\\frac``), or
3. with `numbers="any"` (the default), any other number in the hint has the answer's value
   (`reason="contains_number"`, counted apart: an intermediate value or a small integer that
   merely equals the answer; a hint writing ``5-3`` contains ``3``).

`numbers` chooses the numeric rule: "any" (2 and 3), "stated" (2 only) or "off" (no numeric
check; the verifier still runs). Empty hints (`reason="empty"`) and hints cut off by the token
budget (`reason="truncated"`, set by the generating source) are rejected too. `leak_reason` is
the pure check; `LeakFilter` binds it to a verifier, the numeric rule and the hint types it
applies to.

Departure from the paper: the paper only says answer-revealing hints are removed. Here the rule
is explicit and by default conservative (`numbers="any"`), and the ``full``/``answer`` hint types
of the ablation are exempt by default, since they reveal the answer by design.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from fractions import Fraction

LEAK_REASONS = ("empty", "truncated", "verifier", "contains_answer", "contains_number")
NUMBER_RULES = ("any", "stated", "off")
# a number right after one of these states a result ("= 8", "the answer is 8", "gives 8")
_STATED = re.compile(
    r"(?:=|\b(?:is|equals?|answer|result|gives?|gets?|becomes?)\b)\W{0,3}$", re.IGNORECASE
)
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


def numeric_value(norm: str) -> float | None:
    """The value of a normalised answer compared as a number (not a fraction like ``3/4``)."""
    return None if "/" in norm else as_number(norm)


def answer_match(text: str, answer: str) -> str | None:
    """How `text` contains the normalised `answer`: "stated" (a numeric answer after `=`, "is",
    ...; or a non-numeric answer as a substring), "number" (an equal number elsewhere) or None."""
    norm = normalize_answer(answer)
    if not norm:
        return None
    value = numeric_value(norm)
    if value is None:
        return "stated" if norm in normalize_text(text) else None
    plain = _THOUSANDS.sub("", str(text))
    found_any = False
    for match in _NUMBER.finditer(plain):
        found = float(match.group())
        # "5-3" holds the number 3 as much as -3: a sign is only required for negative answers
        if found == value or (value >= 0 and -found == value):
            if _STATED.search(plain[: match.start()].rstrip()):
                return "stated"
            found_any = True
    return "number" if found_any else None


def contains_answer(text: str, answer: str, numbers: str = "any") -> bool:
    """Whether the normalised `answer` appears in `text` under the numeric rule `numbers`."""
    return leak_reason(text, answer, None, numbers) in ("contains_answer", "contains_number")


def leak_reason(
    hint: str | None,
    answer: str,
    verifier: Callable[[str, str], float] | None = None,
    numbers: str = "any",
) -> str | None:
    """Why `hint` must be rejected for a problem with gold `answer`, or None if it is usable.

    Args:
        hint: the hint text.
        answer: the gold answer.
        verifier: `(completion, answer) -> float`; a score >= 1 on the hint text is a leak.
        numbers: the numeric rule, "any", "stated" or "off" (module docstring).

    Returns:
        "empty", "verifier", "contains_answer", "contains_number", or None.
    """
    if numbers not in NUMBER_RULES:
        raise ValueError(f"numbers={numbers!r} is not one of {list(NUMBER_RULES)}")
    if hint is None or not str(hint).strip():
        return "empty"
    if verifier is not None and float(verifier(hint, answer)) >= 1.0:
        return "verifier"
    match = answer_match(hint, answer)
    numeric = numeric_value(normalize_answer(answer)) is not None
    if match == "stated" and (numbers != "off" or not numeric):
        return "contains_answer"
    if match == "number" and numbers == "any":
        return "contains_number"
    return None


class LeakFilter:
    """`leak_reason` bound to a verifier and to the hint types it applies to.

    Args:
        verifier: a verifier name for `nudgekit.rewards.load_verifier`, a callable, or None
            (substring/number check only).
        check_contains: also reject hints that contain the normalised answer (False: only the
            verifier and empty hints reject).
        numbers: the numeric rule: "any" number equal to the answer (the default), only one
            "stated" as a result, or "off" (module docstring).
        exempt_types: hint types that reveal the answer by design (never filtered for leaks;
            still rejected when empty).
    """

    def __init__(
        self,
        verifier: str | Callable[[str, str], float] | None = None,
        check_contains: bool = True,
        exempt_types: Sequence[str] = ("full", "answer"),
        numbers: str = "any",
    ) -> None:
        if numbers not in NUMBER_RULES:
            raise ValueError(f"LeakFilter: numbers={numbers!r} is not one of {list(NUMBER_RULES)}")
        self.numbers = numbers
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
        reason = leak_reason(hint, answer, self.verifier, self.numbers)
        if reason in ("contains_answer", "contains_number") and not self.check_contains:
            return None
        return reason
