"""Verifiers and reward functions.

`load_verifier(name)` gives a guarded ``(completion, answer) -> float`` verifier (``math``,
``gsm8k``, ``numeric``, ``choice``, ``tiny`` or ``"pkg.mod:fn"``); `VerifierReward`,
`FormatReward` and `CombinedReward` are TRL-style reward functions built on them. Verifier calls
run in a worker-process pool with a hard timeout (`nudgekit.rewards.pool`); `score_batch` sends
many at once. ``python -m nudgekit.rewards.fuzz`` fuzzes every registered verifier.
"""

from __future__ import annotations

from nudgekit.rewards.functions import (
    CombinedReward,
    FormatReward,
    VerifierReward,
    completion_text,
    score_batch,
)
from nudgekit.rewards.guard import Verifier, VerifierStats, VerifierTimeout, call_with_timeout
from nudgekit.rewards.registry import VERIFIERS, load_verifier, resolve_verifier

__all__ = [
    "VERIFIERS",
    "CombinedReward",
    "FormatReward",
    "Verifier",
    "VerifierReward",
    "VerifierStats",
    "VerifierTimeout",
    "call_with_timeout",
    "completion_text",
    "load_verifier",
    "resolve_verifier",
    "score_batch",
]
