"""The ``math`` verifier: symbolic answer equivalence with math-verify.

The completion's last ``\\boxed{}`` is taken when there is one (the MATH convention, and what
models are prompted to produce); otherwise math-verify searches the whole completion. The gold
answer is parsed as a LaTeX expression (wrapped in ``$...$`` unless it already carries a
``\\boxed{}`` or an unescaped ``$``). Parsed gold answers are cached: in GRPO the same answer is
checked G times.

math-verify's signal-based timeouts are disabled here (they only work in the main thread and would
cancel the `Verifier` guard's timer); the guard in `nudgekit.rewards.guard` bounds every call.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from nudgekit.rewards.extract import last_boxed


class _DropTimeoutWarning(logging.Filter):
    """math-verify warns that nothing bounds its run time when its timeouts are off; ours does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


# An unescaped dollar: "\\$36" (a price) is not a math delimiter.
_DOLLAR = re.compile(r"(?<!\\)\$")

for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutWarning())


@lru_cache(maxsize=8192)
def _parse_gold(answer: str) -> tuple:
    from math_verify import parse

    text = answer.strip()
    if "\\boxed" not in text and not _DOLLAR.search(text):
        text = f"${text}$"
    return tuple(parse(text, parsing_timeout=None))


@lru_cache(maxsize=4096)
def _parse_completion(completion: str) -> tuple:
    from math_verify import parse

    boxed = last_boxed(completion)
    if boxed is not None:
        parsed = parse(f"$\\boxed{{{boxed}}}$", parsing_timeout=None)
        if parsed:
            return tuple(parsed)
    return tuple(parse(completion, parsing_timeout=None))


def verify_math(completion: str, answer: str) -> float:
    """1.0 when the completion's final answer is mathematically equal to ``answer``."""
    from math_verify import verify

    gold = _parse_gold(answer)
    pred = _parse_completion(completion)
    if not gold or not pred:
        return 0.0
    return float(verify(list(gold), list(pred), timeout_seconds=None))
