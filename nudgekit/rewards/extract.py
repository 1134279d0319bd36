"""Pure functions that pull a final answer (number, letter, boxed expression) out of text.

Used by the built-in verifiers. No function here raises on odd text: "nothing found" is None.
The final-number conventions are those of GSM8K-style outputs, in order of trust:
``#### 42`` (the dataset's own marker), ``\\boxed{42}``, an answer phrase (``The answer is 42``,
``Answer: 42``, ``A: 42``), and finally the last number in the text.

Numbers are read whole by `nudgekit.rewards.numbers` (``1.5e3`` is 1500, ``$-$7`` is -7,
``2^{10}`` is 1024). When the number a convention points at is only part of an expression
(``\\boxed{3\\sqrt{2}}``, ``The answer is 3,5``) the result is None: no other number is read in
its place, so an expression is never mistaken for one of its digits.

Every pattern here is linear-time (whitespace runs are matched possessively, context windows are
bounded), so adversarial completions cannot make extraction slow.
"""

from __future__ import annotations

import re

from nudgekit.rewards.numbers import Number, scan_numbers, to_number

__all__ = [
    "answer_span",
    "choice_letter",
    "final_number",
    "first_number",
    "last_boxed",
    "last_number",
    "to_number",
]

_HASHES = re.compile(r"####\s*+([^\n]*+)")
# Answer phrases; the number must follow on the same line (or after a line break right away).
_ANSWER_PHRASE = re.compile(
    r"(?:answer\s*+(?:is|was|:|=)|^[ \t]*+A[ \t]*+:)\s*+:?([^\n]*+)", re.IGNORECASE | re.MULTILINE
)
# Case-insensitive anchor, case-sensitive letter: "the answer is a function" names no choice.
_CHOICE_ANCHORED = re.compile(
    r"(?i:answer|choice|option)\s*+(?:(?:is|:|=)\s*+)?(?::\s*+)?(?:\\text\{)?\(?([A-E])\)?"
    r"(?![A-Za-z])"
)
_CHOICE_PAREN = re.compile(r"\(([A-E])\)")
_CHOICE_ALONE = re.compile(r"^\s*+\(?([A-E])\)?[.):]?\s*+$")
_TEXT = re.compile(r"\\text\{([^{}]*+)\}")
# A letter is negated by what closes the words before it or opens the words after it, within
# its clause ("not (B)", "rather than option B", "we can rule out C"; "(B) is wrong",
# "Option B isn't right").
_NEGATED_BEFORE = re.compile(
    r"(?:\bnot|n't|\bnor|\bneither|\brather than|\binstead of|\bexcept(?: for)?|\beliminat\w*"
    r"|\brul\w* out|\bexclud\w*)\W*(?:(?:the|option|choice|answer)\W*)*$"
)
_NEGATED_AFTER = re.compile(
    r"^[\s)]*(?:(?:is|was|are|seems|would be|can be|must be|should be)\s+)?"
    r"(?:not\b|never\b|wrong|incorrect|false|invalid|ruled out|eliminated|excluded|impossible"
    r"|the wrong|an incorrect|a wrong)"
    r"|^[\s)]*(?:isn't|wasn't|can't|cannot|doesn't|does not|won't)"
)
_CLAUSE_END = re.compile(r"[,.;:!?\n]")
_WINDOW = 48


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


def _reading(number: Number) -> str | None:
    return number.text if number.value is not None else None


def first_number(text: str) -> str | None:
    """The first number in ``text``; None when there is none or it is part of an expression."""
    found = scan_numbers(text)
    return _reading(found[0]) if found else None


def last_number(text: str) -> str | None:
    """The last number in ``text``; None when there is none or it is part of an expression."""
    found = scan_numbers(text)
    return _reading(found[-1]) if found else None


def _boxed_number(boxed: str) -> tuple[bool, str | None]:
    """(whether the box decides, its number): a box holds exactly one readable number or is
    not a numeric answer; an empty box decides nothing."""
    found = scan_numbers(boxed)
    if not found:
        return any(c.isalnum() for c in boxed), None
    return True, _reading(found[0]) if len(found) == 1 else None


def final_number(text: str) -> str | None:
    """The final numeric answer of a worked solution, following the conventions above.

    An anchor (``####``, an answer phrase) that is followed by no number is skipped rather than
    trusted, so ``The answer is below ... 42`` still finds 42. An anchor whose number is part of
    an expression, or a box that is not exactly one number, decides: the result is None.

    >>> final_number("3 + 4 = 7 apples\\n#### 7")
    '7'
    >>> final_number("She pays $1,200.00 in total. The answer is 1,200.")
    '1,200'
    """
    for match in reversed(_HASHES.findall(text)):
        if found := scan_numbers(match):
            return _reading(found[0])
    boxed = last_boxed(text)
    if boxed is not None:
        decides, number = _boxed_number(boxed)
        if decides:
            return number
    for match in reversed(_ANSWER_PHRASE.findall(text)):
        if found := scan_numbers(match):
            return _reading(found[0])
    return last_number(text)


def answer_span(text: str) -> str | None:
    """The text where the final answer sits: the last non-empty ``####`` line, else the rest of
    the last answer-phrase line, else the last non-empty line; None for blank text."""
    for pattern in (_HASHES, _ANSWER_PHRASE):
        for match in reversed(pattern.findall(text)):
            if match.strip():
                return match.strip()
    lines = text.rstrip().rsplit("\n", 1)
    return lines[-1].strip() or None


def _is_negated(text: str, start: int, end: int) -> bool:
    """Whether the choice at ``text[start:end]`` is named only to be rejected."""
    before = text[max(0, start - _WINDOW) : start].lower()
    clause_starts = [m.end() for m in _CLAUSE_END.finditer(before)]
    before = before[clause_starts[-1] :] if clause_starts else before
    after = text[end : end + _WINDOW].lower()
    if clause_end := _CLAUSE_END.search(after):
        after = after[: clause_end.start()]
    return bool(_NEGATED_BEFORE.search(before) or _NEGATED_AFTER.search(after))


def _last_affirmed(pattern: re.Pattern, text: str) -> str | None:
    letter = None
    for m in pattern.finditer(text):
        if not _is_negated(text, m.start(), m.end()):
            letter = m.group(1)
    return letter


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter (A-E) a completion settles on, else None.

    Tried in order: a boxed letter, the last answer phrase or "Option X" (``The answer is (C)``),
    the last parenthesised letter, a completion that is only a letter. A bare capital elsewhere
    is not taken: "A" starts too many sentences. A letter that is named only to be rejected
    ("not (B)", "rather than option B", "we can rule out C", "(B) is wrong", "Option B isn't
    right") is skipped, within its clause.
    """
    boxed = last_boxed(text)
    if boxed is not None and (m := _CHOICE_ALONE.match(_TEXT.sub(r"\1", boxed))):
        return m.group(1)
    for pattern in (_CHOICE_ANCHORED, _CHOICE_PAREN):
        if (letter := _last_affirmed(pattern, text)) is not None:
            return letter
    m = _CHOICE_ALONE.match(text)
    return m.group(1) if m else None
