"""The four GRPO recipe steps as functions: rollouts, scoring, advantages, policy update.

`GRPOTrainer` owns the state (model, backend, sampler, config) and calls these in order; keeping
them here, free of trainer state, makes each step readable on its own and lets a benchmark or a
test drive one step without a trainer. Every function takes what it needs explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nudgekit.data.problem import Problem
from nudgekit.engines.base import GenerationRequest
from nudgekit.engines.sampling import derive_seed
from nudgekit.errors import NudgekitError
from nudgekit.rewards.functions import score_batch
from nudgekit.rl.advantages import frac_reward_zero_std, group_advantages
from nudgekit.rl.logprobs import shared_prefix_logprobs, supports_shared_prefix
from nudgekit.rl.losses import ClippedPolicyLoss
from nudgekit.rl.precision import checkpointing_active
from nudgekit.rl.rollout_engine import generating
from nudgekit.rl.rollouts import (
    Rollout,
    RolloutBatch,
    split_batches,
    to_device,
    token_logprobs,
)
from nudgekit.rl.stats import StatSums, rollout_metrics
from nudgekit.rl.tis import tis_stats, tis_weights


@dataclass(frozen=True)
class SamplingConfig:
    """How rollouts are sampled (one engine call per step)."""

    max_new_tokens: int
    temperature: float
    top_p: float
    stop: Sequence[str]


def generate_rollouts(
    engine: Any,
    backend: Any,
    prompt: Callable[..., str],
    problems: Sequence[tuple[int, Problem]],
    n: int,
    sampling: SamplingConfig,
    step_seed: int,
    hint: Callable[[Problem], str] | None = None,
) -> list[Rollout]:
    """Sample `n` completions per `(group id, problem)` in one engine call.

    Each group's seed is derived from `step_seed` and its group id, so a group's samples do not
    depend on which rank or batch position generates it.
    """
    texts = [prompt(p, hint(p)) if hint else prompt(p) for _, p in problems]
    requests = [
        GenerationRequest(
            prompt=text,
            n=n,
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=sampling.stop,
            seed=derive_seed(step_seed, gid),
            logprobs=True,
        )
        for (gid, _), text in zip(problems, texts)
    ]
    with generating(engine, backend):  # vLLM: its own copy, nothing gathered
        results = engine.generate(requests)
    return [
        Rollout(
            problem_id=p.id,
            group_id=gid,
            prompt_ids=list(res.prompt_ids),
            completion_ids=list(s.token_ids),
            sample_logprobs=list(s.logprobs or []),
            text=s.text,
            finish_reason=s.finish_reason,
            answer=p.answer,
            hinted=hint is not None,
            meta={"hint": hint(p)} if hint else {},
        )
        for (gid, p), res in zip(problems, results)
        for s in res.samples
    ]


def score(rollouts: list[Rollout], verifier: Callable[[str, str], float]) -> None:
    """Set every rollout's reward from the verifier (which never raises), in one batch."""
    rewards = score_batch(verifier, [r.text for r in rollouts], [r.answer for r in rollouts])
    for r, reward in zip(rollouts, rewards):
        r.reward = float(reward)


def compute_advantages(rollouts: list[Rollout], backend: Any, scale: str) -> dict[str, float]:
    """Group-normalised advantages over the whole step (all ranks); returns reward stats."""
    mine = [(r.reward, r.group_id) for r in rollouts]
    gathered = backend.all_gather_object(mine)
    offset = sum(len(g) for g in gathered[: backend.rank])
    rewards = torch.tensor([x for g in gathered for x, _ in g], dtype=torch.float64)
    groups = torch.tensor([y for g in gathered for _, y in g], dtype=torch.long)
    adv = group_advantages(rewards, groups, scale=scale)
    for i, r in enumerate(rollouts):
        r.advantage = float(adv[offset + i])
    return rollout_metrics(
        rollouts, rewards, groups, frac_reward_zero_std(rewards, groups), backend
    )


@dataclass(frozen=True)
class UpdateConfig:
    """The shape of one `update`: μ epochs x `mini_batches` optimizer steps of micro-batches."""

    ppo_epochs: int
    mini_batches: int
    micro_batch_size: int
    pad_id: int
    mask_truncated: bool
    temperature: float
    share_prompt: bool = True  # run each distinct prompt once per micro-batch (same maths)
    sort_by_length: bool = True  # micro-batches of similar completion lengths (same maths)
    tis_cap: float | None = None  # truncated importance sampling over the engine's log-probs


LogprobFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def logprob_fn(model: torch.nn.Module, share_prompt: bool) -> LogprobFn:
    """`shared_prefix_logprobs` where it is asked for, the model supports it, and gradient
    checkpointing would not drop its KV cache (`checkpointing_active`); else `token_logprobs`."""
    shared = share_prompt and supports_shared_prefix(model) and not checkpointing_active(model)
    return shared_prefix_logprobs if shared else token_logprobs


def update(
    rollouts: list[Rollout],
    backend: Any,
    loss_fn: ClippedPolicyLoss,
    cfg: UpdateConfig,
    ref_model: torch.nn.Module | None = None,
) -> dict[str, float]:
    """μ epochs x `mini_batches` optimizer steps over the rollouts; returns loss stats.

    With μ = 1 and one mini-batch the policy has not moved when each micro-batch is evaluated, so
    the current log-probs (detached) are the old ones and the extra no-grad pass is skipped.
    """
    if len(rollouts) % cfg.mini_batches:
        raise NudgekitError(
            f"grpo: {len(rollouts)} rollouts do not split into mini_batches={cfg.mini_batches}"
        )
    minis = split_batches(
        rollouts,
        cfg.mini_batches,
        cfg.micro_batch_size,
        cfg.pad_id,
        cfg.mask_truncated,
        cfg.sort_by_length,
        cfg.share_prompt,
    )
    device = getattr(backend, "device", None)
    if device is not None:  # collated on the CPU; the update runs where the module lives
        minis = [[to_device(b, device) for b in m] for m in minis]
    reuse_current = cfg.ppo_epochs == 1 and cfg.mini_batches == 1
    precompute_logprobs(
        [b for m in minis for b in m],
        backend.model,
        ref_model,
        cfg.temperature,
        old=not reuse_current,
        share_prompt=cfg.share_prompt,
    )
    policy_logprobs = logprob_fn(backend.model, cfg.share_prompt)
    sums = StatSums()
    for epoch in range(cfg.ppo_epochs):
        for micro_batches in minis:
            optimizer_step(
                micro_batches,
                backend,
                loss_fn,
                cfg.temperature,
                sums,
                reuse_current,
                first=epoch == 0,
                logprobs_of=policy_logprobs,
                tis_cap=cfg.tis_cap,
            )
    return sums.reduce(backend)


@torch.no_grad()
def precompute_logprobs(
    batches: list[RolloutBatch],
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    temperature: float,
    old: bool,
    share_prompt: bool = True,
) -> None:
    """Fill `old_logprobs` (when `old`) and `ref_logprobs` (when there is a reference model)."""
    for b in batches:
        if old:
            b.old_logprobs, _ = logprob_fn(model, share_prompt)(model, b, temperature)
        if ref_model is not None:
            b.ref_logprobs, _ = logprob_fn(ref_model, share_prompt)(ref_model, b, temperature)


def optimizer_step(
    batches: list[RolloutBatch],
    backend: Any,
    loss_fn: ClippedPolicyLoss,
    temperature: float,
    sums: StatSums,
    reuse: bool,
    first: bool,
    logprobs_of: LogprobFn = token_logprobs,
    tis_cap: float | None = None,
) -> None:
    """One optimizer step accumulated over `batches`, normalised by the global counts."""
    counts = backend.all_reduce_sum(
        [sum(b.num_tokens for b in batches), sum(len(b) for b in batches)]
    )
    global_tokens, global_seqs = int(counts[0]), int(counts[1])
    for b in batches:
        logprobs, entropy = logprobs_of(backend.model, b, temperature, True)
        old = logprobs.detach() if reuse else b.old_logprobs
        extra = {}
        if tis_cap is not None:
            extra["token_weights"] = tis_weights(old, b.sample_logprobs, b.completion_mask, tis_cap)
        loss, stats = loss_fn(
            logprobs,
            old,
            b.advantages,
            b.completion_mask,
            b.ref_logprobs,
            global_tokens,
            global_seqs,
            **extra,
        )
        if tis_cap is not None:
            stats = {**stats, **tis_stats(extra["token_weights"], b.completion_mask, tis_cap)}
        backend.backward(loss)
        grad_norm = backend.step()
        sums.add_micro(b, loss, stats, entropy, old, grad_norm, first)
