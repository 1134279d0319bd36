"""A lean inference forward for Llama-family causal LMs (Llama, Qwen2): the same maths as the
`transformers` forward, without its per-module Python.

For small models on a CPU (the tiny world), a `transformers` forward costs its module calls,
hooks, output capturing and mask building far more than its arithmetic (a decode step is mostly
that overhead; numbers in experiments/bench/README.md). `LeanForward` reads the model's own
weight tensors (no copies, so it always sees the current weights and costs no memory) and runs
each layer as a handful of tensor operations, with a boolean attention mask built directly from a
2-D padding mask. Numerics are the model's up to floating-point summation order (tests compare logits
and greedy outputs with the `transformers` forward).

Decode steps (one new token per row) of many rows can compute attention as two batched matrix
products over the cache's columns (`bmm_decode_rows`) instead of `scaled_dot_product_attention`,
whose CPU kernel is slower there and slower still on the strided column views that a cache
written in place (`kvstore`) hands it.

Only inference (no autograd), only models whose layers are all full attention with the standard
rotary embedding computed by the model's own `rotary_emb`; `LeanForward.supports` says which.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "qwen2")
# SDPA reads grouped key/value heads in place (`enable_gqa`, torch >= 2.5) for blocks of at most
# this many queries: bit-identical to repeating them on a CPU, and faster there for decode
# steps, slower for long prefills
GQA_QUERIES = 16
_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32 and weight.dtype == torch.float32:  # one op, the same numbers
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Attention of one query per row: `q [b, H, 1, d]` over `k, v [b, KV, W, d]` (H a multiple
    of KV: grouped-query heads share their key/value head), `bias [b, W]` added to the scores
    (-inf for padding) or None. Two batched matrix products; `k` and `v` may be column views
    `[:, :, :W]` of larger buffers (merging their first two dimensions needs no copy).
    Returns `[b, H, 1, d]`."""
    b, heads, _, d = q.shape
    kv, width = k.shape[1], k.shape[2]
    q = q.reshape(b * kv, heads // kv, d)
    scores = torch.bmm(q, k.reshape(b * kv, width, d).transpose(1, 2)).view(b, heads, width)
    scores = scores.float().mul_(scale)
    if bias is not None:
        scores += bias[:, None, :]
    probs = torch.softmax(scores, dim=-1).to(v.dtype).view(b * kv, heads // kv, width)
    return torch.bmm(probs, v.reshape(b * kv, width, d)).view(b, heads, 1, d)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class LeanForward:
    """`LeanForward(model)(input_ids, attention_mask, position_ids, cache, logits_to_keep)`.

    Args (of the call):
        input_ids: `[b, m]` new tokens.
        attention_mask: `[b, W + m]` 1 for valid columns (cache columns, then the new block),
            or a ready `[b, 1, m, W']` boolean mask of the columns each query sees (a cache
            that writes the block elsewhere than after its `W` columns, `KVStore.scatter`).
        position_ids: `[b, m]`.
        cache: holds `W` columns; `cache.update(keys, values, layer)` takes the block's new
            keys/values and returns the layer's `W + m` columns (a `transformers`
            `DynamicCache` appends them, as the model's own forward does).
        logits_to_keep: logits for the last this many positions only (0: all).

    Returns:
        logits `[b, keep, V]`.

    Args (of the constructor):
        model: the causal LM (eval mode).
        bmm_decode_rows: decode steps (`m == 1`) of at least this many rows use
            `decode_attention`; None: always `scaled_dot_product_attention`.
    """

    def __init__(self, model: Any, bmm_decode_rows: int | None = None) -> None:
        if not self.supports(model):
            raise ValueError(f"LeanForward: unsupported model type {model.config.model_type!r}")
        from transformers.activations import ACT2FN

        cfg = model.config
        self.model, self.inner = model, model.model
        self.act = F.silu if cfg.hidden_act == "silu" else ACT2FN[cfg.hidden_act]
        self.eps = cfg.rms_norm_eps
        # the parameters themselves (not copies), looked up once: a module attribute lookup
        # costs more than a small decode step's arithmetic
        self.layers = [_Layer.of(layer) for layer in self.inner.layers]
        self.norm = self.inner.norm.weight
        self.head = (model.lm_head.weight, model.lm_head.bias)
        self.bmm_decode_rows = bmm_decode_rows

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

    @staticmethod
    def bias(attention_mask: torch.Tensor) -> torch.Tensor | None:
        """`[b, W]` scores bias for `decode_attention`: 0 on valid columns, -inf on the others;
        None when every column is valid. A row with no valid column sees every column instead
        (as in `mask`), so its keys/values stay finite; its output is never read."""
        if bool(attention_mask.all()):
            return None
        masked = attention_mask == 0
        masked &= ~masked.all(-1, keepdim=True)
        bias = torch.zeros(masked.shape, dtype=torch.float32, device=masked.device)
        return bias.masked_fill_(masked, float("-inf"))

    @torch.inference_mode()
    def __call__(self, input_ids, attention_mask, position_ids, cache, logits_to_keep: int = 0):
        b, m = input_ids.shape
        h = self.inner.embed_tokens(input_ids)  # a module call: hooks on it still see ids
        cos, sin = self.inner.rotary_emb(h, position_ids)
        cos, sin = cos[:, None], sin[:, None]
        ready = attention_mask.dim() == 4  # a ready mask always goes to SDPA
        rows = self.bmm_decode_rows
        bmm = m == 1 and not ready and rows is not None and b >= rows
        if bmm:
            bias = self.bias(attention_mask)
        else:
            mask = attention_mask if ready else self.mask(attention_mask, m)
        eps, act = self.eps, self.act
        for i, L in enumerate(self.layers):
            x = _rms(h, L.ln1, eps)
            q = F.linear(x, L.q, L.q_bias).view(b, m, -1, L.head_dim).transpose(1, 2)
            k = F.linear(x, L.k, L.k_bias).view(b, m, -1, L.head_dim).transpose(1, 2)
            v = F.linear(x, L.v, L.v_bias).view(b, m, -1, L.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            k, v = cache.update(k, v, i)
            if bmm:
                out = decode_attention(q, k, v, bias, L.scaling)
            else:
                gqa = {}
                if q.shape[1] != k.shape[1]:  # grouped-query attention
                    if m <= GQA_QUERIES and _GQA and q.device.type == "cpu":
                        gqa["enable_gqa"] = True  # the same numbers, no copies of k and v
                    else:
                        rep = q.shape[1] // k.shape[1]
                        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, scale=L.scaling, **gqa
                )
            h = h + F.linear(out.transpose(1, 2).reshape(b, m, -1), L.o, L.o_bias)
            x = _rms(h, L.ln2, eps)
            gate = act(F.linear(x, L.gate, L.gate_bias))
            h = h + F.linear(gate * F.linear(x, L.up, L.up_bias), L.down, L.down_bias)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return F.linear(_rms(h, self.norm, eps), *self.head)


class _Layer(NamedTuple):
    """One decoder layer's parameters (the module's own tensors) and attention constants."""

    ln1: torch.Tensor
    q: torch.Tensor
    q_bias: torch.Tensor | None
    k: torch.Tensor
    k_bias: torch.Tensor | None
    v: torch.Tensor
    v_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    ln2: torch.Tensor
    gate: torch.Tensor
    gate_bias: torch.Tensor | None
    up: torch.Tensor
    up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None
    head_dim: int
    scaling: float

    @classmethod
    def of(cls, layer: Any) -> _Layer:
        att, mlp = layer.self_attn, layer.mlp
        linears = [att.q_proj, att.k_proj, att.v_proj, att.o_proj]
        linears += [mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        (q, k, v, o, gate, up, down) = [(lin.weight, lin.bias) for lin in linears]
        return cls(
            layer.input_layernorm.weight, *q, *k, *v, *o,
            layer.post_attention_layernorm.weight, *gate, *up, *down,
            att.head_dim, att.scaling,
        )  # fmt: skip
