"""Pure functions that pull a final answer (number, letter, boxed expression) out of text.

Used by the built-in verifiers. No function here raises on odd text: "nothing found" is None.
The final-number conventions are those of GSM8K-style outputs, in order of trust:
``#### 42`` (the dataset's own marker), ``\\boxed{42}``, an answer phrase (``The answer is 42``,
``Answer: 42``, ``A: 42``), and finally the last number in the text.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A number: optional sign (not when glued to a word or a closing bracket, so "x-5" and "(3)-2"
# don't yield -5 / -2), thousands groups or plain digits, optional decimals, optional "/d" fraction.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])-)?(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?"
    r"|(?:(?<![\w)\]])-)?\.\d+"
)
_HASHES = re.compile(r"####\s*([^\n]*)")
# Answer phrases; the number must follow on the same line.
_ANSWER_PHRASE = re.compile(
    r"(?:answer\s*(?:is|was|:|=)|^\s*A\s*:)\s*:?([^\n]*)", re.IGNORECASE | re.MULTILINE
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")
_LATEX_NOISE = re.compile(r"\\[!,;: ]|\\text\{[^{}]*\}|\\(?:mathrm|textbf|mathbf)\b|[{}$]")
# Case-insensitive anchor, case-sensitive letter: "the answer is a function" names no choice.
_CHOICE_ANCHORED = re.compile(
    r"(?i:answer|choice|option)\s*(?:is|:|=)?\s*:?\s*(?:\\text\{)?\(?([A-E])\)?(?![A-Za-z])"
)
_CHOICE_PAREN = re.compile(r"\(([A-E])\)")
_CHOICE_ALONE = re.compile(r"^\s*\(?([A-E])\)?[.):]?\s*$")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched, else None.

    >>> last_boxed(r"so \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    """
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
        i += 1
    return None  # unbalanced: the completion was cut off inside the box


def to_number(text: str) -> Fraction | None:
    """Parse one number string ("1,234", "-3.50", "7/2", ".5") exactly, else None."""
    cleaned = text.replace(",", "").replace(" ", "")
    try:
        if "/" in cleaned:
            num, den = cleaned.split("/")
            return Fraction(num) / Fraction(den)
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _numbers(text: str) -> list[str]:
    text = _LATEX_FRAC.sub(r"\1/\2", text.replace("{,}", ","))
    return _NUMBER.findall(_LATEX_NOISE.sub(" ", text))


def first_number(text: str) -> str | None:
    """The first number in ``text`` (LaTeX spacing and ``$`` removed), else None."""
    found = _numbers(text)
    return found[0] if found else None


def last_number(text: str) -> str | None:
    """The last number in ``text``, else None."""
    found = _numbers(text)
    return found[-1] if found else None


def final_number(text: str) -> str | None:
    """The final numeric answer of a worked solution, following the conventions above.

    An anchor (``####``, ``\\boxed``, an answer phrase) that is followed by no number is
    skipped rather than trusted, so ``The answer is below ... 42`` still finds 42.

    >>> final_number("3 + 4 = 7 apples\\n#### 7")
    '7'
    >>> final_number("She pays $1,200.00 in total. The answer is 1,200.")
    '1,200'
    """
    for match in reversed(_HASHES.findall(text)):
        if (number := first_number(match)) is not None:
            return number
    boxed = last_boxed(text)
    if boxed is not None and (number := first_number(boxed)) is not None:
        return number
    for match in reversed(_ANSWER_PHRASE.findall(text)):
        if (number := first_number(match)) is not None:
            return number
    return last_number(text)


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter (A-E) a completion settles on, else None.

    Tried in order: a boxed letter, an answer phrase (``The answer is (C)``), the last
    parenthesised letter, a completion that is only a letter. A bare capital elsewhere is not
    taken: "A" starts too many sentences.
    """
    boxed = last_boxed(text)
    if boxed is not None:
        inner = re.sub(r"\\text\{([^{}]*)\}", r"\1", boxed)
        if m := _CHOICE_ALONE.match(inner):
            return m.group(1)
    for pattern in (_CHOICE_ANCHORED, _CHOICE_PAREN):
        found = pattern.findall(text)
        if found:
            return found[-1]
    m = _CHOICE_ALONE.match(text)
    return m.group(1) if m else None
