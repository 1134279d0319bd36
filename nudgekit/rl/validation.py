"""Periodic validation for RL: pass@1 of the live policy on a held-out split (never hinted).

Each rank samples its strided share of the problems (problem `i` on rank `i % world_size`) with
request seed `seed + i`, so the numbers do not depend on how many processes ran them; the trainer
sums the per-rank counts. pass@1 is the unbiased estimate `mean_i c_i / n`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.engines.base import Engine, GenerationRequest
from nudgekit.rewards.functions import score_batch
from nudgekit.rl.rollout_engine import generating


def sample_validation(
    engine: Engine,
    problems: Sequence[Problem],
    prompt: Callable[[Problem], str],
    verifier: Callable[[str, str], float],
    *,
    indices: Sequence[int],
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop: Sequence[str],
    seed: int,
    batch_size: int = 64,
) -> list[dict]:
    """Sample and verify `n` completions for each problem in `indices`; one record each."""
    records = []
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start : start + batch_size])
        texts = [prompt(problems[i]) for i in chunk]
        requests = [
            GenerationRequest(
                prompt=text,
                n=n,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=list(stop),
                seed=seed + i,
            )
            for i, text in zip(chunk, texts)
        ]
        for i, text, result in zip(chunk, texts, engine.generate(requests)):
            texts_i = [s.text for s in result.samples]
            answers = [problems[i].answer] * len(texts_i)
            rewards = [float(r) for r in score_batch(verifier, texts_i, answers)]
            records.append(
                {
                    "index": i,
                    "id": problems[i].id,
                    "prompt": text,
                    "answer": problems[i].answer,
                    "completion": result.samples[0].text,
                    "rewards": rewards,
                    "correct": sum(r >= 1.0 for r in rewards),
                    "truncated": sum(s.finish_reason == "length" for s in result.samples),
                }
            )
    return records


def summarize_validation(counts: Sequence[tuple[float, float, float, float]], n: int) -> dict:
    """Metrics from per-rank `(problems, sum of c/n, sum of rewards, truncated)` tuples."""
    problems = sum(c[0] for c in counts)
    denom = max(problems, 1.0)
    return {
        "val/pass@1": sum(c[1] for c in counts) / denom,
        "val/mean_reward": sum(c[2] for c in counts) / (denom * n),
        "val/truncated_frac": sum(c[3] for c in counts) / (denom * n),
        "val/problems": problems,
    }


def validate(
    engine: Engine,
    backend: Any,
    problems: Sequence[Problem],
    prompt: Callable[[Problem], str],
    verifier: Callable[[str, str], float],
    *,
    n: int,
    **sampling: Any,
) -> tuple[dict[str, float], list[dict]]:
    """Sample this rank's share under the backend's generation context; metrics over all ranks.

    Returns:
        `(metrics, this rank's records)`.
    """
    with generating(engine, backend):  # vLLM: its own copy, nothing gathered
        records = sample_validation(
            engine,
            problems,
            prompt,
            verifier,
            indices=range(backend.rank, len(problems), backend.world_size),
            n=n,
            **sampling,
        )
    mine = (
        len(records),
        sum(r["correct"] / n for r in records),
        sum(sum(r["rewards"]) for r in records),
        sum(r["truncated"] for r in records),
    )
    return summarize_validation(backend.all_gather_object(mine), n), records


def table_rows(records: list[dict], limit: int) -> list[dict]:
    """The first `limit` records as sample-completion table rows."""
    keys = ("id", "prompt", "completion", "answer")
    return [{**{k: r[k] for k in keys}, "reward": r["rewards"][0]} for r in records[:limit]]
