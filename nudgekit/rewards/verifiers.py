"""The built-in text verifiers: ``gsm8k``, ``numeric`` and ``choice``.

Each is a raw ``(completion, answer) -> float`` function returning 1.0 or 0.0. They may raise on
inputs nobody should send (the `Verifier` wrapper turns that into a counted 0.0) but are written
not to. The ``math`` verifier lives in `nudgekit.rewards.math_verifier` because it imports sympy.
"""

from __future__ import annotations

from fractions import Fraction

from nudgekit.rewards.extract import choice_letter, final_number, to_number

# The ``numeric`` verifier's tolerances (see `numeric_match`).
FLOAT_REL_TOL = 1e-9
MIN_SIGNIFICANT_DIGITS = 4


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


def written_precision(number: str) -> tuple[int, int] | None:
    """(decimal places, significant digits) of a number as written, or None when it is exact
    (a fraction "7/2" is exact; "1.50" has 2 places and 3 digits; "1.5e3" has 0 places)."""
    if "/" in number:
        return None
    mantissa, _, exponent = number.lower().replace(",", "").lstrip("+-").partition("e")
    whole, _, decimals = mantissa.partition(".")
    places = len(decimals) - (int(exponent) if exponent else 0)
    significant = len((whole + decimals).lstrip("0")) or 1
    return max(places, 0), significant


def numeric_match(found: str, value: Fraction, gold: Fraction, gold_text: str | None) -> bool:
    """Whether a found number (text and value) stands for the gold value, as `verify_numeric`
    documents: float rounding, or a rounding to the coarser written precision when that side
    still shows `MIN_SIGNIFICANT_DIGITS` digits. Exact arithmetic: no float overflow."""
    if abs(value - gold) <= Fraction(FLOAT_REL_TOL) * max(abs(value), abs(gold)):
        return True
    sides = [p for p in (written_precision(found), gold_text and written_precision(gold_text)) if p]
    if not sides:
        return False
    places, significant = min(sides)
    if significant < MIN_SIGNIFICANT_DIGITS:
        return False
    return abs(value - gold) <= Fraction(1, 2 * 10**places)


def verify_numeric(completion: str, answer: str) -> float:
    """1.0 when the completion's final number equals the gold up to rounding.

    For answers that were computed in floating point (rates, averages). The rule: a value within
    ``FLOAT_REL_TOL`` (1e-9, relative) of the gold is float rounding and matches (``0.1 + 0.2``
    printed as 0.30000000000000004 matches 0.3). Otherwise the less precise of the two numbers
    as written sets the precision, and the other must round to it (half a unit in its last
    place), provided that number shows at least `MIN_SIGNIFICANT_DIGITS` significant digits:
    0.33333 and 3.1416 match 1/3 and 3.14159265, 0.33 does not match 1/3, and 1000099 does not
    match 1000000 (an integer's precision is 0.5). A percent sign is ignored on both sides.
    """
    gold_text = answer.replace("%", "").strip().strip("$").rstrip(".")
    gold = gold_number(gold_text)
    found = final_number(completion.replace("%", ""))
    value = to_number(found) if found is not None else None
    if gold is None or value is None:
        return 0.0
    plain_gold = gold_text if to_number(gold_text) is not None else None
    return float(numeric_match(found, value, gold, plain_gold))


def verify_choice(completion: str, answer: str) -> float:
    """1.0 when the completion settles on the gold letter (A-E).

    The gold may be "C", "(C)", "C)" or "c"; the completion's letter is found by
    `choice_letter` (boxed letter, answer phrase, last parenthesised letter, lone letter).
    """
    gold = answer.strip().strip("().: ").upper()[:1]
    if gold not in {"A", "B", "C", "D", "E"}:
        return 0.0
    return float(choice_letter(completion) == gold)
