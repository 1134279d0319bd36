"""Read the numbers written in a text, whole: sign, thousands groups, decimals, exponents, powers.

`scan_numbers(text)` returns one `Number` per number written, in order. A number is read with
everything that belongs to it, so a naive reader's mistakes do not happen:

* exponents: ``1.5e3`` and ``1.5 \\times 10^{3}`` are 1500; ``2^{10}`` and ``2^10`` are 1024;
* signs: a Unicode minus (U+2212 and its look-alikes), ``$-$7`` and ``-(7)`` are -7; a minus
  glued after a word or a closing bracket is an operator (``x-5``, ``(3)-2``);
* commas: ``1,000`` is a thousand, but ``3,5`` (a decimal comma, or a list) is not a number we
  can trust, so it is read as *unreadable*;
* a number that is only part of an expression (``3\\sqrt{2}``, ``2\\pi``, the ``2`` of
  ``\\sqrt{2}`` or ``x^{2}``, an argument of an unconverted ``\\frac``, ``3 \\times 4``) is
  *unreadable* too: its `Number.value` is None, and callers must not read any other number
  in its place.

Every pattern is linear-time: whitespace runs are matched possessively and all context checks
look at bounded windows, so no input makes extraction slow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# Powers and exponents are bounded so that evaluating them stays cheap.
MAX_EXPONENT = 400
MAX_POWER_DIGITS = 400
_WINDOW = 40  # characters of context looked at on each side of a number

MINUS = str.maketrans({c: "-" for c in "\u2212\u2012\u2013\ufe63\uff0d"})
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{(-?\d++)\}\{(\d++)\}")
NEG_PAREN = re.compile(r"(?<![\w)\]])-[ \t]*+\([ \t]*+(\d[\d,.]*+)[ \t]*+\)")
_TEXT_CMD = re.compile(r"\\(?:text|mathrm|textbf|mathbf|textit|mbox)\{([^{}]*+)\}")
_NOISE = re.compile(r"\\[!,;: ]|\\(?:left|right)\b|\\[$%]|\*\*")
_PY_POWER = re.compile(r"(?<=\d)\*\*(?=\d)")
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])-)?(?:(?:\d{1,3}(?:,\d{3})++(?!\d)|\d++)(?:\.\d++)?|\.\d++)"
    r"(?:[eE][+-]?\d++(?!\w|\.\d))?(?:[ \t]*+/[ \t]*+\d++(?:\.\d++)?(?!\d|\.\d))?"
)
_POWER = re.compile(r"[ \t]*+\^[ \t]*+(?:\{[ \t]*+(-?\d++)[ \t]*+\}|(\d++)(?!\d|\.\d))")
_SCIENTIFIC = re.compile(
    r"[ \t]*+(?:\\times|\\cdot|\u00d7|\*)[ \t]*+10[ \t]*+\^[ \t]*+"
    r"(?:\{[ \t]*+(-?\d++)[ \t]*+\}|(-?\d++)(?!\d|\.\d))"
)
_PLAIN = re.compile(r"[+-]?(?:(?:\d{1,3}(?:,\d{3})++|\d++)(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?")
_EXP = re.compile(r"[eE]([+-]?\d++)$")
_CMD_BEFORE = re.compile(r"\\([A-Za-z]++)$")
_CMD_AFTER = re.compile(r"\\([A-Za-z]++)")
_TAINT_AFTER = ("^", "\u221a", "\u03c0", "\u00d7", "}{")
_TAINT_BEFORE = ("^", "_", "\u221a", "\u03c0")
# LaTeX commands that may sit next to a plain number (layout, relations, delimiters); any other
# command glued to a number (\sqrt, \pi, \cdot, \times, \alpha, ...) makes it an expression.
_NEUTRAL_COMMANDS = frozenset(
    "boxed fbox displaystyle quad qquad begin end hline newline label tag approx equiv le leq "
    "ge geq lt gt ne neq implies Rightarrow rightarrow to therefore mathbf mathrm text".split()
)


@dataclass(frozen=True)
class Number:
    """One number as written: ``text`` (canonical, parseable by `to_number`) and its ``value``.

    ``value`` is None when the number is part of an expression or ambiguous (see the module
    docstring); ``text`` is then the digits as written.
    """

    text: str
    value: Fraction | None


def clean_math_text(text: str) -> str:
    """Normalise signs and LaTeX markup so that numbers can be read.

    Unicode minus signs become ``-``; ``\\frac{a}{b}`` with integer arguments becomes ``a/b``;
    ``\\text{..}`` and friends are unwrapped; ``$``, ``\\$``, ``\\%``, ``**`` and LaTeX spacing
    are dropped (``$-$7`` becomes ``-7``); ``-(7)`` becomes ``-7``.
    """
    text = _PY_POWER.sub("^", text.translate(MINUS).replace("{,}", ","))
    text = _TEXT_CMD.sub(r" \1 ", text)
    text = _NOISE.sub(" ", text).replace("$", "")
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    return NEG_PAREN.sub(r"-\1", text)


def _small_exponent(digits: str) -> bool:
    return len(digits.lstrip("+-")) <= 6 and abs(int(digits)) <= MAX_EXPONENT


def to_number(text: str) -> Fraction | None:
    """Parse one number string exactly, else None.

    Accepted: ``1,234`` (commas only as thousands groups), ``-3.50``, ``7/2``, ``.5``,
    ``1.5e3`` (exponent magnitude at most `MAX_EXPONENT`), a Unicode minus.
    """
    cleaned = text.translate(MINUS).replace(" ", "")
    parts = cleaned.split("/")
    if len(parts) > 2 or not all(_PLAIN.fullmatch(p) for p in parts):
        return None
    if any((m := _EXP.search(p)) and not _small_exponent(m.group(1)) for p in parts):
        return None
    try:
        values = [Fraction(p.replace(",", "")) for p in parts]
        return values[0] / values[1] if len(values) == 2 else values[0]
    except (ValueError, ZeroDivisionError):
        return None


def _power(base: Fraction, exponent: int) -> Fraction | None:
    """``base ** exponent`` when the result is small enough to write down, else None."""
    if abs(exponent) > MAX_EXPONENT:
        return None
    size = max(len(str(abs(base.numerator))), len(str(base.denominator)))
    if size * abs(exponent) > MAX_POWER_DIGITS or (base == 0 and exponent < 0):
        return None
    return base**exponent


def _canonical(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value}"


def _is_part_of_expression(text: str, start: int, end: int) -> bool:
    """Whether the number at ``text[start:end]`` is glued to an operator or a LaTeX command."""
    after = text[end : end + _WINDOW]
    if after[:1] == "," and after[1:2].isdigit():
        return True  # "3,5": a decimal comma or a list, not a number we can read
    after = after.lstrip(" \t")
    if after.startswith(_TAINT_AFTER) or (after[:1] == "*" and after[1:].lstrip()[:1].isalnum()):
        return True
    if after.lstrip("})").startswith("^"):
        return True  # "(3)^2", "\sqrt{2}^3"
    if (m := _CMD_AFTER.match(after)) and m.group(1) not in _NEUTRAL_COMMANDS:
        return True
    before = text[max(0, start - _WINDOW) : start]
    if before.endswith(",") and before[-2:-1].isdigit():
        return True  # the "5" of "3,5"
    before = before.rstrip(" \t")
    if before.endswith("{") and before[:-1].rstrip().endswith("}"):
        return True  # the second argument of a two-argument command
    before = before.rstrip("{( \t")
    m = _CMD_BEFORE.search(before)
    return before.endswith(_TAINT_BEFORE) or (m is not None and m.group(1) not in _NEUTRAL_COMMANDS)


def _is_unit_exponent(text: str, start: int) -> bool:
    """Whether the number at ``start`` is the exponent of a unit or variable ("25 cm^2")."""
    before = text[max(0, start - _WINDOW) : start].rstrip("{ \t")
    return before.endswith("^") and before[:-1].rstrip("} \t")[-1:].isalpha()


def _read_tail(
    text: str, raw: str, end: int, value: Fraction | None
) -> tuple[Fraction | None, int, bool]:
    """Apply a power or a ``\\times 10^{k}`` after the number; returns (value, end, consumed)."""
    window = text[end : end + _WINDOW]
    for pattern, scientific in ((_SCIENTIFIC, True), (_POWER, False)):
        m = pattern.match(window)
        if m is None:
            continue
        digits = m.group(1) or m.group(2)
        exponent = int(digits) if len(digits) <= 6 else MAX_EXPONENT + 1
        if value is None:
            return None, end + m.end(), True
        if scientific:
            power = _power(Fraction(10), exponent)
            return (None if power is None else value * power), end + m.end(), True
        if "/" in raw:
            return None, end + m.end(), True  # "3/2^2": precedence makes this an expression
        power = _power(abs(value), exponent)  # "-2^2" is -(2^2)
        if power is not None and value < 0:
            power = -power
        return power, end + m.end(), True
    return value, end, False


def scan_numbers(text: str) -> list[Number]:
    """Every number written in ``text``, in order (``text`` is cleaned first).

    >>> [n.text for n in scan_numbers(r"so 1.5e3, \\boxed{2^{10}} or $-$7")]
    ['1.5e3', '1024', '-7']
    """
    text = clean_math_text(text)
    found: list[Number] = []
    resume = 0
    for m in _NUMBER.finditer(text):
        if m.start() < resume or _is_unit_exponent(text, m.start()):
            continue  # the exponent of a power read just before, or of a unit
        raw = m.group()
        value = to_number(raw)
        value, end, consumed = _read_tail(text, raw, m.end(), value)
        resume = end
        tainted = _is_part_of_expression(text, m.start(), end)
        if value is None or tainted:
            found.append(Number(raw, None))
        else:
            found.append(Number(_canonical(value) if consumed else raw, value))
    return found
