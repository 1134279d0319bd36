"""The built-in text verifiers: ``gsm8k``, ``numeric`` and ``choice``.

Each is a raw ``(completion, answer) -> float`` function returning 1.0 or 0.0. They may raise on
inputs nobody should send (the `Verifier` wrapper turns that into a counted 0.0) but are written
not to. The ``math`` verifier lives in `nudgekit.rewards.math_verifier` because it imports sympy.
"""

from __future__ import annotations

import math
from fractions import Fraction

from nudgekit.rewards.extract import choice_letter, final_number, to_number

# The ``numeric`` verifier's tolerance: relative, with an absolute floor for answers near 0.
REL_TOL = 1e-4
ABS_TOL = 1e-6


def gold_number(answer: str) -> Fraction | None:
    """The number a gold answer stands for: the answer itself ("1,200", "$18", "18.0") or, for a
    full reference solution (``... #### 18``, ``... A: 18``), its final number."""
    number = to_number(answer.strip().strip("$").rstrip("."))
    if number is None:
        found = final_number(answer)
        number = to_number(found) if found is not None else None
    return number


def verify_gsm8k(completion: str, answer: str) -> float:
    """1.0 when the completion's final number equals the gold number exactly.

    Exact (rational) equality, so "18.00" matches "18" but "17.99" does not: GSM8K answers are
    integers and a near miss is a wrong answer.
    """
    gold = gold_number(answer)
    found = final_number(completion)
    if gold is None or found is None:
        return 0.0
    return float(to_number(found) == gold)


def verify_numeric(completion: str, answer: str) -> float:
    """1.0 when the completion's final number is within a small relative tolerance of the gold.

    For answers that were computed in floating point (rates, averages): 0.3333 matches 1/3,
    0.33 does not. A percent sign is ignored on both sides ("25%" == "25").
    """
    gold = gold_number(answer.replace("%", ""))
    found = final_number(completion.replace("%", ""))
    value = to_number(found) if found is not None else None
    if gold is None or value is None:
        return 0.0
    return float(math.isclose(float(value), float(gold), rel_tol=REL_TOL, abs_tol=ABS_TOL))


def verify_choice(completion: str, answer: str) -> float:
    """1.0 when the completion settles on the gold letter (A-E).

    The gold may be "C", "(C)", "C)" or "c"; the completion's letter is found by
    `choice_letter` (boxed letter, answer phrase, last parenthesised letter, lone letter).
    """
    gold = answer.strip().strip("().: ").upper()[:1]
    if gold not in {"A", "B", "C", "D", "E"}:
        return 0.0
    return float(choice_letter(completion) == gold)
