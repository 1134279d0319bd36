"""`HintLift`: do the collected hints make unsolvable problems solvable?

The quantity NuRL lives on: among problems where the policy gets 0 of `n` samples right without a
hint (no GRPO signal), the share that reach >= 1 of `n` with the hint in the prompt. Sampling is
seeded per problem (not per batch position), so numbers do not depend on batching. Used by the
hints pipeline as an optional report; it is a diagnostic, not part of the paper's method.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.engines.base import GenerationRequest
from nudgekit.nurl.store import HintStore


def _seed(seed: int, key: str) -> int:
    return int(hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()[:15], 16)


class HintLift:
    """Measure un-hinted vs hinted success on the zero-pass problems.

    Args:
        engine: the policy's engine.
        prompt: `(problem, hint=None) -> prompt text` (e.g. `ChatPrompt`).
        verifier: `(completion, answer) -> float`.
        n: samples per problem (the GRPO group size).
        max_new_tokens: completion budget.
        temperature: sampling temperature.
        seed: base seed.
    """

    def __init__(
        self,
        engine: Any,
        prompt: Callable[..., str],
        verifier: Callable[[str, str], float],
        n: int = 8,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.engine, self.prompt, self.verifier = engine, prompt, verifier
        self.n, self.max_new_tokens, self.temperature, self.seed = (
            n,
            max_new_tokens,
            temperature,
            seed,
        )

    def correct(
        self, problems: Sequence[Problem], hints: dict[str, str] | None = None, tag: str = "plain"
    ) -> dict[str, int]:
        """Correct samples out of `n` per problem id (hinted when `hints` is given)."""
        requests = [
            GenerationRequest(
                prompt=self.prompt(p, hints[p.id]) if hints else self.prompt(p),
                n=self.n,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                seed=_seed(self.seed, f"{p.id}/{tag}"),
            )
            for p in problems
        ]
        results = self.engine.generate(requests) if requests else []
        return {
            p.id: int(sum(self.verifier(s.text, p.answer) >= 1.0 for s in r.samples))
            for p, r in zip(problems, results)
        }

    def measure(self, problems: Sequence[Problem], store: HintStore) -> dict[str, float]:
        """`lift/*` metrics for `problems` with the hints of `store`."""
        plain = self.correct(problems)
        zero = [p for p in problems if plain[p.id] == 0]
        with_hint = [p for p in zero if p.id in store]
        hinted = self.correct(with_hint, store.hints(), tag="hinted")
        n_total, n_zero = len(problems), len(zero)
        lifted = sum(c > 0 for c in hinted.values())
        return {
            "lift/n": float(self.n),
            "lift/pass@1_unhinted": sum(plain.values()) / (self.n * n_total) if n_total else 0.0,
            "lift/zero_pass_frac": n_zero / n_total if n_total else 0.0,
            "lift/zero_pass_with_hint": float(len(with_hint)),
            # share of ALL zero-pass problems lifted (a dropped hint counts as not lifted)
            "lift/lifted_frac": lifted / n_zero if n_zero else 0.0,
            "lift/hinted_pass@1": (
                sum(hinted.values()) / (self.n * len(with_hint)) if with_hint else 0.0
            ),
        }
