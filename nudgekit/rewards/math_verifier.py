"""The ``math`` verifier: symbolic answer equivalence with math-verify.

The completion's last ``\\boxed{}`` is taken when there is one (the MATH convention, and what
models are prompted to produce); otherwise math-verify searches the whole completion. The gold
answer is parsed as a LaTeX expression (wrapped in ``$...$`` unless it already carries a
``\\boxed{}`` or an unescaped ``$``). Parsed gold answers are cached: in GRPO the same answer is
checked G times.

math-verify's signal-based timeouts are disabled here (they only work in the main thread and would
cancel the `Verifier` guard's timer); the guard in `nudgekit.rewards.guard` bounds every call.

Before parsing, both sides are normalised: Unicode minus signs become ``-`` and plain-text
scientific notation ``1.5e3`` is written out as ``1500`` (math-verify would read ``1.5``), and
``$-$7`` and ``-(7)`` become ``-7``. When the gold is one value, a final answer with a decimal
comma (``3,5``) scores 0. A final answer written as LaTeX without delimiters is parsed as one
expression (`undelimited_answer`), so ``#### 5^{7}`` is not read as 5.
Input that would make sympy run for seconds scores 0 without being parsed (`too_costly`):
brackets nested deeper than `MAX_DEPTH`, power towers with a numeric exponent, exponents of six
or more digits, factorials of five-digit numbers, six chained powers, 300-digit numbers, a boxed
answer longer than `MAX_ANSWER_CHARS`. No honest answer needs them.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from functools import lru_cache

from math_verify import parse, verify

from nudgekit.rewards.extract import answer_span, last_boxed
from nudgekit.rewards.numbers import MINUS, NEG_PAREN

MAX_DEPTH = 10
_SCIENTIFIC = re.compile(r"(?<![\w.])(\d++(?:\.\d++)?)[eE]([+-]?\d{1,3})(?!\w|\.\d)")
_LATEX_MINUS = re.compile(r"(?<!\\)\$-\$\s*+(?=\d)")
_COMMA_RUN = re.compile(r"(?<!\d)\d++(?:,\d++)++")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})++")
_DELIMITER = re.compile(r"(?<!\\)\$|\\[(\[]")
_LATEX_MARK = re.compile(r"\\[A-Za-z]|[\^_]")
_EXPRESSION_START = re.compile(r"[-\d\\(]")
_COSTLY = re.compile(
    r"(?<!\d)\d{5,}+\s*+!"  # 12345!
    r"|\^\s*+\{?\s*+[\d.]{6,}"  # 2^{999999}
    r"|\^\s*+\{?\s*+\d++\s*+\}?\s*+\^"  # 10^{10^{10}}
    r"|(?:\^[^\s^$]{0,12}){6}"  # x^x^x^x^x^x
    r"|\d{300}"  # a 300-digit number
)
MAX_ANSWER_CHARS = 1_000  # a boxed answer longer than this is not an answer
_BRACKETS = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


class _DropTimeoutWarning(logging.Filter):
    """math-verify warns that nothing bounds its run time when its timeouts are off; ours does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


# An unescaped dollar: "\\$36" (a price) is not a math delimiter.
_DOLLAR = re.compile(r"(?<!\\)\$")

for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutWarning())


def _expand(match: re.Match) -> str:
    return format(Decimal(match.group()), "f")


def normalize(text: str) -> str:
    """Unicode minus signs to ``-``, ``1.5e3`` written out (``1500``)."""
    text = _LATEX_MINUS.sub("-", text.translate(MINUS))
    return NEG_PAREN.sub(r"-\1", _SCIENTIFIC.sub(_expand, text))


def has_decimal_comma(text: str) -> bool:
    """Whether ``text`` glues digits with a comma that is not a thousands separator (``3,5``)."""
    return any(not _THOUSANDS.fullmatch(m.group()) for m in _COMMA_RUN.finditer(text))


def undelimited_answer(completion: str) -> str | None:
    """The final answer when it is LaTeX written without ``$`` delimiters (``The answer is
    5\\sqrt{11}.``), from its first digit, sign or command on; else None. math-verify only
    reads LaTeX between delimiters and would take the ``5`` alone."""
    span = answer_span(completion)
    if span is None or _DELIMITER.search(span) or not _LATEX_MARK.search(span):
        return None
    start = _EXPRESSION_START.search(span)
    return span[start.start() :].rstrip(". ") if start else None


def too_costly(text: str, max_chars: int | None = None) -> bool:
    """Whether parsing ``text`` could take sympy seconds (see the module docstring)."""
    if max_chars is not None and len(text) > max_chars:
        return True
    depth = 0
    for char in text:
        depth += _BRACKETS.get(char, 0)
        if depth > MAX_DEPTH:
            return True
    return _COSTLY.search(text) is not None


@lru_cache(maxsize=8192)
def _parse_gold(answer: str) -> tuple:
    text = normalize(answer.strip())
    if too_costly(text, MAX_ANSWER_CHARS):
        return ()
    if "\\boxed" not in text and not _DOLLAR.search(text):
        text = f"${text}$"
    return tuple(parse(text, parsing_timeout=None))


@lru_cache(maxsize=4096)
def _parse_completion(completion: str) -> tuple:
    completion = normalize(completion)
    boxed = last_boxed(completion)
    if too_costly(
        completion if boxed is None else boxed, None if boxed is None else MAX_ANSWER_CHARS
    ):
        return ()
    if boxed is not None:
        parsed = parse(f"$\\boxed{{{boxed}}}$", parsing_timeout=None)
        if parsed:
            return tuple(parsed)
    if (expression := undelimited_answer(completion)) is not None:
        if too_costly(expression, MAX_ANSWER_CHARS):
            return ()
        return tuple(parse(f"${expression}$", parsing_timeout=None))
    return tuple(parse(completion, parsing_timeout=None))


def verify_math(completion: str, answer: str) -> float:
    """1.0 when the completion's final answer is mathematically equal to ``answer``."""
    if "," not in answer and has_decimal_comma(
        last_boxed(completion) or answer_span(completion) or ""
    ):
        return 0.0  # "3,5" is not 3 (nor the set {3, 5}) when the gold is one value
    gold = _parse_gold(answer)
    pred = _parse_completion(completion)
    if not gold or not pred:
        return 0.0
    return float(verify(list(gold), list(pred), timeout_seconds=None))
