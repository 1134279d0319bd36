"""Completion log-probs for the update, computed with each distinct prompt run only once.

A GRPO micro-batch holds G completions of the same prompt side by side. `token_logprobs` runs
every row as prompt ++ completion, so the prompt's tokens go through the model (forward and
backward) G times. `shared_prefix_logprobs` runs each distinct prompt once with a KV cache,
repeats the cache's keys/values to the rows that share it (an indexing op, so gradients from
all G rows flow back into the one prompt pass), and runs the completions on top. The result is
the same function of the weights -- same values, same gradients up to float rounding -- with
(G-1)/G fewer prompt tokens through the network. Rows are grouped by their exact prompt ids,
not by group id, so NuRL's hinted and unhinted rows of a group stay apart.

Both paths ask the model only for the logits they use (`logits_to_keep`) when it supports that,
and turn them into log-probs block by block (`nudgekit.rl.selective`), never as fp32 `[N, L, V]`.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

import torch

from nudgekit.rl.selective import selective_logprobs

if TYPE_CHECKING:
    from nudgekit.rl.rollouts import RolloutBatch


def completion_logprobs(
    logits: torch.Tensor,  # [N, L, V] logits predicting each completion token
    completion_ids: torch.Tensor,  # [N, L]
    temperature: float,
    entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(log p(token) [N, L], entropy [N, L] or None)` at the sampling temperature.

    Computed block by block (`selective_logprobs`): no fp32 `[N, L, V]` tensor is made, in the
    forward or the backward pass.
    """
    return selective_logprobs(logits, completion_ids, temperature, entropy)


@functools.lru_cache(maxsize=16)
def _params_of(forward_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(forward_type.forward).parameters)


def model_kwargs(model: torch.nn.Module) -> frozenset[str]:
    """Names the model's forward accepts (looking through a DeepSpeed/DDP wrapper)."""
    inner = getattr(model, "module", None)
    core = inner if isinstance(inner, torch.nn.Module) else model
    return _params_of(type(core))


def supports_shared_prefix(model: torch.nn.Module) -> bool:
    """Whether `shared_prefix_logprobs` can run `model` (a transformers model with a cache)."""
    names = model_kwargs(model)
    return "logits_to_keep" in names and bool({"cache", "past_key_values"} & names)


def shared_prefix_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, temperature: float = 1.0, entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same result as `token_logprobs(model, batch, ...)`, each distinct prompt run once.

    Returns:
        `(logprobs [N, L], entropy [N, L] or None)`.
    """
    from transformers import DynamicCache

    width, length = batch.prompt_width, batch.completion_ids.shape[1]
    index, firsts = batch.prompt_groups()  # [N] prompt of each row, [U] a row of each prompt
    prompt_mask = batch.attention_mask[firsts, :width]  # [U, P]
    core = getattr(model, "module", model)
    cache = DynamicCache(config=core.config)
    cache_kw = "cache" if "cache" in model_kwargs(model) else "past_key_values"
    prefix = model(
        input_ids=batch.input_ids[firsts, :width],
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    )
    first_logits = prefix.logits[index, -1:, :]  # [N, 1, V] predicts completion token 0
    if length == 1:
        return completion_logprobs(first_logits, batch.completion_ids, temperature, entropy)
    cache.batch_select_indices(index)  # [U] -> [N] rows; differentiable indexing
    prompt_len = prompt_mask.sum(-1)[index]  # [N]
    out = model(
        input_ids=batch.completion_ids[:, :-1],
        attention_mask=torch.cat([prompt_mask[index], batch.attention_mask[:, width:-1]], -1),
        position_ids=prompt_len.unsqueeze(-1) + torch.arange(length - 1, device=prompt_len.device),
        use_cache=True,
        **{cache_kw: cache},
    )
    # log-probs of the two parts separately: concatenating the logits would copy [N, L, V]
    lp0, ent0 = completion_logprobs(first_logits, batch.completion_ids[:, :1], temperature, entropy)
    lp, ent = completion_logprobs(out.logits, batch.completion_ids[:, 1:], temperature, entropy)
    return torch.cat([lp0, lp], 1), (torch.cat([ent0, ent], 1) if entropy else None)
