"""Baselines for nudging: one model alone, and proxy tuning (logit arithmetic).

- `generate_texts`: greedy/sampled completions of one model from its own prompts (base-only,
  with or without stop strings; nudger-only; aligned-large), through any `Engine`.
- `ProxyTuningDecoder`: decode with `logits_base + alpha * (logits_expert - logits_antiexpert)`
  (Liu et al. 2024), the three models resident with their own `RowCache`s and batched. It needs
  one shared vocabulary; tokenizers that differ are a one-line `NudgekitError` (that is the
  restriction nudging removes). Departure from the paper: each model gets its own prompt (the
  expert its chat template, base and anti-expert the plain prompt), as nudging does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nudgekit.engines.base import Engine, GenerationRequest
from nudgekit.engines.sampling import derive_seed, row_uniforms, sample_step
from nudgekit.errors import NudgekitError
from nudgekit.inference import SyncRequest, row_cache
from nudgekit.nudging.roles import require_resident
from nudgekit.nudging.text import eos_ids, prompt_ids, same_vocabulary


def generate_texts(
    engine: Engine,
    prompts: Sequence[str],
    max_new_tokens: int,
    stop: Sequence[str] = (),
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[str]:
    """One completion per prompt (question i is seeded with `seed + i`)."""
    requests = [
        GenerationRequest(
            prompt=p,
            n=1,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=list(stop),
            seed=seed + i,
        )
        for i, p in enumerate(prompts)
    ]
    return [r.samples[0].text for r in engine.generate(requests)]


class ProxyTuningDecoder:
    """Proxy tuning over three resident models sharing one vocabulary.

    Args:
        base: the large base model (`.model` and `.tokenizer`, e.g. an `HFEngine`).
        expert: the small tuned model.
        antiexpert: the small untuned model the expert was tuned from.
        alpha: weight of the expert - anti-expert difference.
        max_new_tokens: completion budget.
        temperature: 0 = greedy.
        top_p: nucleus mass when sampling.
        stop: stop strings (the text is cut before the first).
        seed: question i samples with its own stream seeded from (seed, i).
        batch_size: questions decoded at once.
    """

    def __init__(
        self,
        base: Any,
        expert: Any,
        antiexpert: Any,
        alpha: float = 1.0,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int = 0,
        batch_size: int = 16,
    ) -> None:
        for name, lm in (("base", base), ("expert", expert), ("antiexpert", antiexpert)):
            require_resident(lm, name, "proxy tuning", "it mixes logits of hf engines only")
        for name, lm in (("expert", expert), ("antiexpert", antiexpert)):
            if not same_vocabulary(base.tokenizer, lm.tokenizer):
                raise NudgekitError(
                    f"proxy tuning: the base and {name} tokenizers differ; logit arithmetic needs "
                    "one shared vocabulary (use nudging for cross-family pairs)"
                )
        self.lms = (base, expert, antiexpert)
        self.tok = base.tokenizer
        self.vocab = len(self.tok)
        self.eos = eos_ids(base.model, self.tok)
        self.alpha, self.max_new_tokens = alpha, max_new_tokens
        self.temperature, self.top_p, self.stop = temperature, top_p, list(stop)
        self.seed, self.batch_size = seed, batch_size

    def decode(
        self,
        base_prompts: Sequence[str],
        expert_prompts: Sequence[str],
        antiexpert_prompts: Sequence[str] | None = None,
    ) -> list[str]:
        """One completion per question; the anti-expert reads the base prompts by default."""
        anti = base_prompts if antiexpert_prompts is None else antiexpert_prompts
        out: list[str] = []
        for start in range(0, len(base_prompts), self.batch_size):
            end = start + self.batch_size
            prompts = (base_prompts[start:end], expert_prompts[start:end], anti[start:end])
            out.extend(self._batch(prompts, start))
        return out

    @torch.inference_mode()
    def _batch(self, prompts: tuple[Sequence[str], ...], offset: int) -> list[str]:
        n = len(prompts[0])
        caches = [row_cache(lm.model, n, _pad(lm.tokenizer, self.eos)) for lm in self.lms]
        ids = [[prompt_ids(lm.tokenizer, p) for p in ps] for lm, ps in zip(self.lms, prompts)]
        seeds = [derive_seed(self.seed, offset + i) for i in range(n)]
        uniforms = row_uniforms(seeds, self.max_new_tokens)  # [n, max_new_tokens]
        new: list[list[int]] = [[] for _ in range(n)]
        live = list(range(n))
        for step in range(self.max_new_tokens):
            logits = []
            for cache, prompt in zip(caches, ids):
                got = cache.sync([SyncRequest(r, prompt[r] + new[r]) for r in live])
                rows = [g[len(prompt[r]) + len(new[r])] for g, r in zip(got, live)]
                logits.append(torch.stack(rows)[:, : self.vocab].float().cpu())
            mixed = logits[0] + self.alpha * (logits[1] - logits[2])
            k = len(live)
            picked, _, _, _ = sample_step(
                mixed,
                torch.full((k,), self.temperature),
                torch.full((k,), self.top_p),
                uniforms[live, step],
            )
            done = []
            for r, token in zip(live, picked.tolist()):
                if token in self.eos:
                    done.append(r)
                    continue
                new[r].append(token)
                if self.stop and any(s in self._text(new[r]) for s in self.stop):
                    done.append(r)
            live = [r for r in live if r not in done]
            if not live:
                break
        return [self._cut(self._text(t)) for t in new]

    def _text(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def _cut(self, text: str) -> str:
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return text[: min(cuts)] if cuts else text


def _pad(tokenizer: Any, eos: frozenset[int]) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else min(eos)
