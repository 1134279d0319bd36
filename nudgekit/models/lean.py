"""A lean inference forward for Llama-family causal LMs (Llama, Qwen2): the same maths as the
`transformers` forward, without its per-module Python.

For small models on a CPU (the tiny world), a `transformers` forward costs its module calls,
hooks, output capturing and mask building far more than its arithmetic: a 4-layer, 192-wide model
spends ~5 ms per decode step of which ~1 ms is matrix work. `LeanForward` reads the model's own
weight tensors (no copies, so it always sees the current weights and costs no memory) and runs
each layer as a handful of tensor operations, with a boolean attention mask built directly from a
2-D padding mask. Numerics are the model's up to floating-point summation order (tests compare logits
and greedy outputs with the `transformers` forward).

Only inference (no autograd), only models whose layers are all full attention with the standard
rotary embedding computed by the model's own `rotary_emb`; `LeanForward.supports` says which.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "qwen2")


def _linear(x: torch.Tensor, lin: Any) -> torch.Tensor:
    return F.linear(x, lin.weight, lin.bias)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class LeanForward:
    """`LeanForward(model)(input_ids, attention_mask, position_ids, cache, logits_to_keep)`.

    Args (of the call):
        input_ids: `[b, m]` new tokens.
        attention_mask: `[b, W + m]` 1 for valid columns (cache columns, then the new block).
        position_ids: `[b, m]`.
        cache: holds `W` columns; `cache.update(keys, values, layer)` takes the block's new
            keys/values and returns the layer's `W + m` columns (a `transformers`
            `DynamicCache` appends them, as the model's own forward does).
        logits_to_keep: logits for the last this many positions only (0: all).

    Returns:
        logits `[b, keep, V]`.
    """

    def __init__(self, model: Any) -> None:
        if not self.supports(model):
            raise ValueError(f"LeanForward: unsupported model type {model.config.model_type!r}")
        from transformers.activations import ACT2FN

        cfg = model.config
        self.model, self.inner = model, model.model
        self.act = ACT2FN[cfg.hidden_act]
        self.eps = cfg.rms_norm_eps
        self.layers = [
            (layer.input_layernorm.weight, layer.self_attn,
             layer.post_attention_layernorm.weight, layer.mlp)
            for layer in self.inner.layers
        ]  # fmt: skip

    @staticmethod
    def supports(model: Any) -> bool:
        cfg = getattr(model, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED:
            return False
        if getattr(cfg, "use_sliding_window", False):
            return False
        if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
            return False
        inner = getattr(model, "model", None)
        return inner is not None and hasattr(inner, "rotary_emb") and not model.training

    @staticmethod
    def mask(attention_mask: torch.Tensor, m: int) -> torch.Tensor:
        """`[b, 1, m, W + m]` booleans: a valid column, at or before the query's own column.
        A query that may see nothing (a padded slot before any valid column) sees everything
        instead, so attention stays finite; its output is never read."""
        width = attention_mask.shape[1]
        cols = torch.arange(width, device=attention_mask.device)
        rows = torch.arange(width - m, width, device=attention_mask.device)
        allowed = (cols[None, :] <= rows[:, None])[None] & attention_mask.bool()[:, None, :]
        empty = ~allowed.any(-1, keepdim=True)
        return (allowed | empty)[:, None]

    @torch.inference_mode()
    def __call__(self, input_ids, attention_mask, position_ids, cache, logits_to_keep: int = 0):
        b, m = input_ids.shape
        h = self.inner.embed_tokens(input_ids)
        cos, sin = self.inner.rotary_emb(h, position_ids)
        cos, sin = cos[:, None], sin[:, None]
        mask = self.mask(attention_mask, m)
        for i, (ln1, att, ln2, mlp) in enumerate(self.layers):
            x = _rms(h, ln1, self.eps)
            hd = att.head_dim
            q = _linear(x, att.q_proj).view(b, m, -1, hd).transpose(1, 2)
            k = _linear(x, att.k_proj).view(b, m, -1, hd).transpose(1, 2)
            v = _linear(x, att.v_proj).view(b, m, -1, hd).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            k, v = cache.update(k, v, i)
            if q.shape[1] != k.shape[1]:  # grouped-query attention (torch 2.4 has no enable_gqa)
                rep = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=att.scaling)
            h = h + _linear(out.transpose(1, 2).reshape(b, m, -1), att.o_proj)
            x = _rms(h, ln2, self.eps)
            h = h + _linear(self.act(_linear(x, mlp.gate_proj)) * _linear(x, mlp.up_proj),
                            mlp.down_proj)  # fmt: skip
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return self.model.lm_head(_rms(h, self.inner.norm.weight, self.eps))
