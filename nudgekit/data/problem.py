"""The `Problem` record every dataset is mapped to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One verifiable problem.

    Args:
        id: stable id derived from the source row (never from position after shuffling).
        question: the problem text shown to the model.
        answer: the gold final answer, as a string the verifier compares against.
        hint: an optional hint (training only; evaluation never shows it).
        meta: free-form source fields (level, subject, solution, ...).
    """

    id: str
    question: str
    answer: str
    hint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
