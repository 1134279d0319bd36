"""Scoring for the `gsm8k_nudgekit` lm-eval task: nudgekit's own gsm8k verifier on the gold
number as `nudgekit.data.load_benchmark("gsm8k")` reads it (after the last `####`, commas
removed), so lm-eval's `acc` and nudgekit's eval accuracy score a text identically."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _verifier():
    from nudgekit.rewards import load_verifier

    return load_verifier("gsm8k")


def gold(doc: dict[str, Any]) -> str:
    """The gold number of a GSM8K row, as nudgekit's loader reads it."""
    return doc["answer"].rsplit("####", 1)[1].strip().replace(",", "")


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval's hook: `{"acc": 1.0 or 0.0}` for the one generated text."""
    return {"acc": float(_verifier()(results[0], gold(doc)))}
