"""Pure sampling math for the in-process engines: temperature, top-p, inverse-CDF draws.

Conventions (the contract the GRPO code relies on):

- `temperature == 0` means greedy (argmax); its log-probs are taken at temperature 1.
- The log-prob of a sampled token is `log_softmax(logits / T)[token]`: the policy's log-prob at
  the sampling temperature, *before* top-p truncation (TRL and verl compute the same quantity
  for GRPO, so at top_p=1 sampling log-probs equal a teacher-forced forward pass; at T=1 they
  are the model's own log-probs).
- Top-1 ("top_logprobs") is the argmax token and its log-prob under that same distribution.
- Randomness comes in as one uniform number per row and step (`uniforms`), drawn from per-row
  seeded generators (`row_uniforms`), so a row's tokens depend only on its own seed and logits,
  never on which other rows share its batch.
"""

from __future__ import annotations

import hashlib

import torch


def scale_logits(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide each row by its temperature; rows with temperature 0 (greedy) stay at T=1.

    Args:
        logits: [R, V] float logits.
        temperature: [R] temperatures (>= 0).

    Returns:
        [R, V] scaled logits.
    """
    t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    return logits / t.unsqueeze(-1).to(logits.dtype)


def top_p_filter(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) every token outside each row's nucleus.

    The nucleus is the smallest set of most-likely tokens whose mass reaches `top_p`; the most
    likely token is always kept. Ties at the boundary are broken by the stable sort order.

    Args:
        logits: [R, V] (already temperature-scaled) logits.
        top_p: [R] nucleus mass in (0, 1]; 1 keeps everything.

    Returns:
        [R, V] logits with masked entries set to -inf.
    """
    if bool((top_p >= 1.0).all()):
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    drop_sorted = mass_before >= top_p.unsqueeze(-1).to(probs.dtype)
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def inverse_cdf_sample(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one token per row: the first token whose cumulative probability exceeds `u`.

    Args:
        logits: [R, V] logits (-inf entries have probability 0 and are never drawn).
        uniforms: [R] numbers in [0, 1).

    Returns:
        [R] int64 token ids.
    """
    cdf = logits.double().softmax(dim=-1).cumsum(dim=-1)
    target = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
    ids = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return ids.clamp_(max=logits.shape[-1] - 1)


def sample_step(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick the next token for every row and report its log-prob and the row's top-1.

    Args:
        logits: [R, V] raw next-token logits (any float dtype; computed in float32).
        temperature: [R] per-row temperature (0 = greedy).
        top_p: [R] per-row nucleus mass.
        uniforms: [R] per-row uniform draws in [0, 1).

    Returns:
        (token ids [R], their log-probs [R], top-1 ids [R], top-1 log-probs [R]); log-probs are
        `log_softmax(logits / T)` (T=1 for greedy rows), before top-p.
    """
    scaled = scale_logits(logits.float(), temperature)
    logprobs = scaled.log_softmax(dim=-1)
    top_lp, top_ids = logprobs.max(dim=-1)
    ids = top_ids
    if bool((temperature > 0).any()):  # skip the sort / cumsum when every row is greedy
        sampled = inverse_cdf_sample(top_p_filter(scaled, top_p), uniforms)
        ids = torch.where(temperature > 0, sampled, top_ids)
    token_lp = logprobs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return ids, token_lp, top_ids, top_lp


def derive_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample `index` of a request seeded with `seed` (stable across runs)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def row_uniforms(seeds: list[int], steps: int) -> torch.Tensor:
    """Pre-draw `steps` uniforms per row, each row from its own `torch.Generator`.

    Args:
        seeds: one seed per row.
        steps: number of decoding steps to cover.

    Returns:
        [R, steps] float32 uniforms in [0, 1).
    """
    out = torch.empty(len(seeds), steps)
    for row, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(seed)
        out[row] = torch.rand(steps, generator=gen)
    return out
