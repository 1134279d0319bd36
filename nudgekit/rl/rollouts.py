"""Typed rollout containers: one `Rollout` per sampled completion, `RolloutBatch` per micro-batch.

A `Rollout` keeps the *exact* prompt token ids the engine sampled it with, so the trainer's
log-probs (current, old, reference) are always computed under that prompt. NuRL relies on this:
a hinted rollout carries its hinted prompt ids and `hinted=True`, and the hint is context, never
a training target (only completion tokens enter the loss mask).

`collate` lays a micro-batch out as left-padded prompts followed by right-padded completions
(the engine's own layout), so every completion starts at column `prompt_width` and the logits
that predict it are the columns `prompt_width - 1 ... prompt_width + L - 2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nudgekit.errors import NudgekitError
from nudgekit.rl.logprobs import completion_logprobs, model_kwargs


@dataclass
class Rollout:
    """One sampled completion and everything the update needs to know about it.

    Args:
        problem_id: the `Problem.id` it answers.
        group_id: the group (one prompt of one step) it is normalised with.
        prompt_ids: the exact prompt token ids it was sampled with.  # [P]
        completion_ids: the sampled completion ids.  # [L]
        sample_logprobs: the engine's per-token log-probs at sampling time.  # [L]
        text: the decoded completion (what the verifier scores).
        finish_reason: "eos", "stop" or "length" (truncated).
        answer: the gold answer.
        hinted: sampled from a hinted prompt (NuRL).
        reward: set by the trainer's `score` step.
        advantage: set by the trainer's `compute_advantages` step.
        meta: free-form extras (e.g. the hint text) for logging.
    """

    problem_id: str
    group_id: int
    prompt_ids: list[int]
    completion_ids: list[int]
    sample_logprobs: list[float]
    text: str
    finish_reason: str
    answer: str
    hinted: bool = False
    reward: float = 0.0
    advantage: float = 0.0
    meta: dict = field(default_factory=dict)


@dataclass
class RolloutBatch:
    """A collated micro-batch of rollouts (N rows, P prompt columns, L completion columns)."""

    input_ids: torch.Tensor  # [N, P+L] left-padded prompt ++ right-padded completion
    attention_mask: torch.Tensor  # [N, P+L]
    prompt_width: int  # P
    completion_ids: torch.Tensor  # [N, L]
    completion_mask: torch.Tensor  # [N, L] float; 1 for completion tokens that enter the loss
    advantages: torch.Tensor  # [N]
    sample_logprobs: torch.Tensor  # [N, L] engine log-probs (diagnostics only)
    old_logprobs: torch.Tensor | None = None  # [N, L] trainer log-probs before the update
    ref_logprobs: torch.Tensor | None = None  # [N, L] reference policy (beta > 0 only)

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum().item())

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def prompt_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(index [N], firsts [U])`: each row's distinct-prompt number, and one row per prompt.

        Rows with the same prompt ids (and so the same left padding) share a number.
        """
        prompts = self.input_ids[:, : self.prompt_width]
        _, index = torch.unique(prompts, dim=0, return_inverse=True)
        rows = torch.arange(len(self), device=index.device)
        firsts = torch.full((int(index.max()) + 1,), len(self), device=index.device)
        return index, firsts.scatter_reduce(0, index, rows, "amin")


def collate(rollouts: Sequence[Rollout], pad_id: int, mask_truncated: bool = False) -> RolloutBatch:
    """Stack rollouts into a `RolloutBatch`.

    Args:
        rollouts: the micro-batch.
        pad_id: id used for padding (masked out everywhere).
        mask_truncated: drop completions that hit the token budget from the loss (their mask
            row is all zero; DAPO's overlong filtering).
    """
    n = len(rollouts)
    width = max(len(r.prompt_ids) for r in rollouts)
    length = max(max(len(r.completion_ids) for r in rollouts), 1)
    input_ids = torch.full((n, width + length), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width + length), dtype=torch.long)
    comp_mask = torch.zeros((n, length), dtype=torch.float32)
    sample_lp = torch.zeros((n, length), dtype=torch.float32)
    for i, r in enumerate(rollouts):
        p, c = len(r.prompt_ids), len(r.completion_ids)
        input_ids[i, width - p : width] = torch.tensor(r.prompt_ids, dtype=torch.long)
        input_ids[i, width : width + c] = torch.tensor(r.completion_ids, dtype=torch.long)
        attention[i, width - p : width + c] = 1
        if not (mask_truncated and r.finish_reason == "length"):
            comp_mask[i, :c] = 1.0
        sample_lp[i, :c] = torch.tensor(r.sample_logprobs[:c], dtype=torch.float32)
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention,
        prompt_width=width,
        completion_ids=input_ids[:, width:].clone(),
        completion_mask=comp_mask,
        advantages=torch.tensor([r.advantage for r in rollouts], dtype=torch.float32),
        sample_logprobs=sample_lp,
    )


def padded_tokens(rollouts: Sequence[Rollout], micro_batch_size: int, share_prompt: bool) -> int:
    """Tokens the update runs through the network for `rollouts` cut in order into micro-batches:
    per micro-batch, its prompts at the widest prompt (each distinct prompt once when
    `share_prompt`, else every row) plus every row at the longest completion."""
    total = 0
    for s in range(0, len(rollouts), micro_batch_size):
        part = rollouts[s : s + micro_batch_size]
        prompts = {tuple(r.prompt_ids) for r in part} if share_prompt else part
        total += len(prompts) * max(len(r.prompt_ids) for r in part)
        total += len(part) * max(max(len(r.completion_ids) for r in part), 1)
    return total


def by_length(rollouts: Sequence[Rollout], micro_batch_size: int, share_prompt: bool) -> list[int]:
    """An order of `rollouts` for cutting micro-batches: sorted by completion length (stable, so
    equal lengths keep their groups together) when that pads fewer tokens (`padded_tokens`) than
    the given order, else the given order. The loss is a sum over micro-batches normalised by
    global counts, so the order changes no loss or gradient, only the padding."""
    given = list(range(len(rollouts)))
    order = sorted(given, key=lambda i: len(rollouts[i].completion_ids))
    cost = lambda idx: padded_tokens([rollouts[i] for i in idx], micro_batch_size, share_prompt)  # noqa: E731
    return order if cost(order) < cost(given) else given


def split_batches(
    rollouts: Sequence[Rollout],
    mini_batches: int,
    micro_batch_size: int,
    pad_id: int,
    mask_truncated: bool = False,
    sort_by_length: bool = False,
    share_prompt: bool = True,
) -> list[list[RolloutBatch]]:
    """Split rollouts in order into `mini_batches` parts, each collated as micro-batches; with
    `sort_by_length` each part is first ordered by `by_length` (fewer padded tokens)."""
    per_mini = len(rollouts) // mini_batches
    minis = []
    for start in range(0, per_mini * mini_batches, per_mini):
        part = list(rollouts[start : start + per_mini])
        if sort_by_length:
            part = [part[i] for i in by_length(part, micro_batch_size, share_prompt)]
        minis.append([collate(part[s : s + micro_batch_size], pad_id, mask_truncated)
                      for s in range(0, per_mini, micro_batch_size)])  # fmt: skip
    return minis


def token_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, temperature: float = 1.0, entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the completion tokens under `model`, on the batch's exact ids.

    Logits are divided by the sampling temperature, so at top_p=1 these equal the engine's
    sampling log-probs up to floating-point rounding (see `nudgekit.engines.sampling`). Every
    row runs as prompt ++ completion; `shared_prefix_logprobs` is the faster equivalent.

    Returns:
        `(logprobs [N, L], entropy [N, L] or None)`.
    """
    width, length = batch.prompt_width, batch.completion_ids.shape[1]
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    # only the logits that predict completion tokens (the last L + 1 positions, minus the last)
    keep = "logits_to_keep" in model_kwargs(model)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids,
        use_cache=False,
        **({"logits_to_keep": length + 1} if keep else {}),
    )
    logits = out.logits[:, :-1] if keep else out.logits[:, width - 1 : width + length - 1]
    return completion_logprobs(logits, batch.completion_ids, temperature, entropy)


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id (its eos id when it has no pad token)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise NudgekitError("grpo: the tokenizer has neither a pad nor an eos token")
    return int(pad)


def to_device(batch: RolloutBatch, device: torch.device) -> RolloutBatch:
    """Move every tensor field of `batch` to `device`."""
    moved = {
        k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(batch).items()
    }
    return RolloutBatch(**moved)
