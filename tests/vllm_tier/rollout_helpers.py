"""Shared by the vLLM-tier trainer tests and their torchrun worker: a tiny zoo policy vLLM's CPU
attention can run (head size 32), the GRPO trainer with vLLM rollouts, and the weight check."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nudgekit.engines import GenerationRequest, HFEngine
from nudgekit.models import ModelSpec
from nudgekit.rl.rollout_engine import VLLMRollouts

ZOO_POLICY = "tiny-policy@test"  # tied embeddings, the tiny chat template


def build_policy(root: Path) -> Path:
    """The `@test` zoo policy rebuilt at hidden 64 (2 heads of 32) into `root`."""
    from nudgekit.zoo.build import build_into
    from nudgekit.zoo.registry import spec_of

    if not (root / "config.json").is_file():
        build_into(ZOO_POLICY, replace(spec_of(ZOO_POLICY), hidden=64), root, progress=False)
    return root


def vllm_engine_factory(model_dir: Path, **kwargs: Any) -> Any:
    return functools.partial(VLLMRollouts, spec=ModelSpec(str(model_dir)), **kwargs)


def probe_prompts(trainer: Any, k: int = 3) -> list[str]:
    return [trainer.prompt(p) for p in trainer.train_problems[:k]]


def weight_gap(trainer: Any, prompts: list[str], max_new_tokens: int = 8) -> dict[str, Any]:
    """Greedy ids and top-1 log-probs of the trainer's vLLM engine vs `HFEngine` on the trainer's
    module (gathered under ZeRO-3): `{"same_ids": bool, "max_lp_diff": float, "lp": [...]}`."""
    requests = [
        GenerationRequest(
            prompt=p,
            n=1,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            logprobs=True,
            top_logprobs=True,
        )
        for p in prompts
    ]
    got = trainer.engine.generate(requests)
    with trainer.backend.generation() as module:
        hf = HFEngine(module, tokenizer=trainer.tokenizer, max_batch_size=8)
        want = hf.generate(requests)
    same, diff, lps = True, 0.0, []
    for g, w in zip(got, want):
        gs, ws = g.samples[0], w.samples[0]
        same &= gs.token_ids == ws.token_ids
        n = min(len(gs.top_logprobs), len(ws.top_logprobs))
        d = torch.tensor(gs.top_logprobs[:n]) - torch.tensor(ws.top_logprobs[:n])
        diff = max(diff, d.abs().max().item() if n else 0.0)
        lps.append(list(ws.top_logprobs))
    return {"same_ids": bool(same), "max_lp_diff": diff, "lp": lps}
