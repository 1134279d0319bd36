"""Sampling and scoring helpers for the tiny-world check, on top of the `hf` engine."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nudgekit.engines.base import GenerationRequest
from nudgekit.rewards.tiny import is_well_formatted, verify_tiny, verify_tiny_lenient


class ZooModel:
    """A loaded zoo model with its tokenizer and an `HFEngine` over it."""

    def __init__(self, path: Path, max_batch_size: int = 256) -> None:
        from nudgekit.engines.hf import HFEngine

        self.path = Path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path).eval()
        self.engine = HFEngine(self.model, self.tokenizer, max_batch_size=max_batch_size)

    def sample(
        self,
        prompts: list[str],
        keys: list[str],
        *,
        n: int,
        temperature: float,
        max_new_tokens: int,
        seed: int,
    ) -> list[list[str]]:
        """`n` completions per prompt; request seeds come from `keys` (e.g. problem id + tag),
        so a problem's samples do not depend on which other problems share the call."""
        requests = [
            GenerationRequest(
                prompt=p,
                n=n,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=key_seed(k, seed),
            )
            for p, k in zip(prompts, keys)
        ]
        with torch.inference_mode():
            results = self.engine.generate(requests)
        return [[s.text for s in r.samples] for r in results]


def key_seed(key: str, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()[:12], 16)


def correct_counts(completions: list[list[str]], answers: list[str]) -> list[int]:
    """Strictly verified correct samples per problem."""
    return [int(sum(verify_tiny(c, a) for c in cs)) for cs, a in zip(completions, answers)]


def format_scores(completions: list[str], answers: list[str]) -> dict[str, float]:
    """Strict accuracy, lenient (format-aware) accuracy and well-formatted rate of one sample
    per problem."""
    n = max(1, len(completions))
    return {
        "strict": sum(verify_tiny(c, a) for c, a in zip(completions, answers)) / n,
        "lenient": sum(verify_tiny_lenient(c, a) for c, a in zip(completions, answers)) / n,
        "format": sum(is_well_formatted(c) for c in completions) / n,
    }


def leaks(hint: str, answer: str) -> bool:
    """A hint leaks when the verifier accepts it or the answer appears in it as a number."""
    return (
        verify_tiny(hint, answer) > 0
        or re.search(rf"(?<!\d){re.escape(answer)}(?!\d)", hint) is not None
    )
