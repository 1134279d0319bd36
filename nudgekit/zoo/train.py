"""A small, deterministic SFT loop for zoo models (prompt-masked next-token loss).

Deterministic given the seed on a fixed machine and thread count: model init, example order and
dropout-free training all come from seeded generators.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from tqdm.auto import tqdm

IGNORE = -100


def encode(tok: Any, examples: list[tuple[str, str]], max_len: int) -> list[tuple[list[int], int]]:
    """Token ids of prompt + target and the prompt length (loss starts there), cut to max_len."""
    out = []
    for prompt, target in examples:
        p = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        t = tok(target, add_special_tokens=False)["input_ids"]
        out.append(((p + t)[:max_len], len(p)))
    return out


def collate(batch: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (prompt and padding ignored)."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # [B, L]
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # [B, L]
    for i, (seq, n_prompt) in enumerate(batch):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def epoch_batches(lengths: list[int], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """One epoch of index batches: shuffled, then length-sorted within windows of 16 batches.

    Sorting inside a window cuts padding (a big share of CPU time here) while the batch order
    stays random; everything comes from `gen`, so the order is deterministic.
    """
    order = torch.randperm(len(lengths), generator=gen).tolist()
    window = batch_size * 16
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def lr_at(step: int, total: int, peak: float, warmup_frac: float = 0.05) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def sft(
    model: torch.nn.Module,
    tok: Any,
    examples: list[tuple[str, str]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_len: int = 256,
    desc: str = "sft",
    progress: bool = True,
) -> list[float]:
    """Train `model` in place on `examples`; returns the loss of every step.

    Args:
        model: a causal LM (HF `...ForCausalLM`).
        tok: its tokenizer (pad token required).
        examples: (prompt, target) pairs; loss on target tokens only.
        steps: optimizer steps.
        batch_size: examples per step, drawn by a seeded permutation (epochs repeat).
        lr: peak learning rate (AdamW, warmup + cosine).
        seed: seeds the example order.
        max_len: examples are cut to this many tokens.
        desc: progress-bar label.
        progress: show a tqdm bar.

    Returns:
        Per-step training losses.
    """
    data = encode(tok, examples, max_len)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    batches: list[list[int]] = []
    losses: list[float] = []
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        if not batches:
            batches = epoch_batches([len(ids) for ids, _ in data], batch_size, gen)
        batch = collate([data[i] for i in batches.pop()], tok.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def weight_hash(model: torch.nn.Module) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) in sorted order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
