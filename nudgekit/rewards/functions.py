"""Reward functions: TRL-style callables ``(completions, **columns) -> list[float]``.

`VerifierReward` scores completions against a dataset column with a verifier, `FormatReward`
checks a surface pattern, and `CombinedReward` sums rewards with weights, so a config can write::

    reward:
      _target_: nudgekit.rewards.CombinedReward
      rewards:
        - {_target_: nudgekit.rewards.VerifierReward, verifier: math}
        - {_target_: nudgekit.rewards.FormatReward}
      weights: [1.0, 0.1]

Completions may be plain strings or TRL conversational completions (a list of messages; the
last message's ``content`` is scored).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from nudgekit.errors import NudgekitError
from nudgekit.rewards.guard import Verifier
from nudgekit.rewards.registry import load_verifier

RewardFn = Callable[..., list[float]]

# A final answer in one of the conventions the verifiers read.
DEFAULT_FORMAT = r"\\boxed\{.+\}|####\s*\S|(?i:the answer is|answer:)\s*\S"


def completion_text(completion: object) -> str:
    """The text of one completion: a string, or the last message of a conversation."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    return completion if isinstance(completion, str) else ""


def score_batch(
    verifier: Callable[[str, str], float], completions: Sequence, answers: Sequence
) -> list[float]:
    """Scores of ``(completion, answer)`` pairs: one `Verifier.batch` round trip when the
    verifier has one, else one call per pair."""
    batch = getattr(verifier, "batch", None)
    if callable(batch):
        return list(batch(completions, answers))
    return [float(verifier(c, a)) for c, a in zip(completions, answers)]


class VerifierReward:
    """1.0 per completion that the verifier accepts against the row's ``answer_key`` column.

    Args:
        verifier: a verifier name or path (see `load_verifier`) or a `Verifier`.
        answer_key: the dataset column holding the gold answer.
        timeout_s: per-call time limit handed to `load_verifier`.
        isolation: ``"process"`` (worker pool, hard timeout) or ``"inline"``.
    """

    def __init__(
        self,
        verifier: str | Verifier = "math",
        answer_key: str = "answer",
        timeout_s: float = 5.0,
        isolation: str = "process",
    ) -> None:
        self.verifier = load_verifier(verifier, timeout_s=timeout_s, isolation=isolation)
        self.answer_key = answer_key
        self.__name__ = f"{self.verifier.name}_reward"  # TRL logs rewards by __name__

    def __call__(self, completions: Sequence, **columns) -> list[float]:
        if self.answer_key not in columns:
            raise NudgekitError(
                f"reward {self.__name__!r}: column {self.answer_key!r} missing from the batch "
                f"(columns: {sorted(columns)})"
            )
        answers = columns[self.answer_key]
        if len(answers) != len(completions):
            raise NudgekitError(
                f"reward {self.__name__!r}: {len(completions)} completions but "
                f"{len(answers)} values in column {self.answer_key!r}"
            )
        return score_batch(self.verifier, [completion_text(c) for c in completions], answers)


class FormatReward:
    """1.0 per completion that contains ``pattern`` (a regex; DOTALL, searched not anchored).

    Args:
        pattern: the regex; the default accepts ``\\boxed{..}``, ``#### x``, ``The answer is x``
            and ``Answer: x``.
    """

    def __init__(self, pattern: str = DEFAULT_FORMAT) -> None:
        try:
            self.pattern = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise NudgekitError(f"FormatReward: bad pattern {pattern!r} ({exc})") from None
        self.__name__ = "format_reward"

    def __call__(self, completions: Sequence, **columns) -> list[float]:  # noqa: ARG002
        return [float(bool(self.pattern.search(completion_text(c)))) for c in completions]


def _reward_name(reward: RewardFn) -> str:
    return getattr(reward, "__name__", type(reward).__name__)


class CombinedReward:
    """The weighted sum of several rewards: ``sum_i weights[i] * rewards[i](...)``.

    Args:
        rewards: reward callables; a string is shorthand for ``VerifierReward(<string>)``.
        weights: one finite weight per reward (default: all 1.0).
    """

    def __init__(self, rewards: Sequence[RewardFn | str], weights: Sequence[float] | None = None):
        if not rewards:
            raise NudgekitError("CombinedReward: 'rewards' is empty")
        self.rewards = [VerifierReward(r) if isinstance(r, str) else r for r in rewards]
        weights = [1.0] * len(self.rewards) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.rewards):
            raise NudgekitError(
                f"CombinedReward: {len(self.rewards)} rewards but {len(weights)} weights"
            )
        if not all(math.isfinite(w) for w in weights):
            raise NudgekitError(f"CombinedReward: weights must be finite numbers, got {weights}")
        self.weights = weights
        self.__name__ = "+".join(_reward_name(r) for r in self.rewards)

    def components(self, completions: Sequence, **columns) -> dict[str, list[float]]:
        """Each reward's unweighted scores, keyed by reward name (for logging)."""
        parts: dict[str, list[float]] = {}
        for i, reward in enumerate(self.rewards):
            scores = list(reward(completions, **columns))
            if len(scores) != len(completions):
                raise NudgekitError(
                    f"CombinedReward: reward {_reward_name(reward)!r} returned {len(scores)} "
                    f"scores for {len(completions)} completions"
                )
            name = _reward_name(reward)
            parts[name if name not in parts else f"{name}#{i}"] = scores
        return parts

    def __call__(self, completions: Sequence, **columns) -> list[float]:
        parts = self.components(completions, **columns).values()
        totals = [0.0] * len(completions)
        for weight, scores in zip(self.weights, parts):
            totals = [t + weight * float(s) for t, s in zip(totals, scores)]
        return totals
