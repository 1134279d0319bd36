"""`LeanForward` against the `transformers` forward it replaces: logits with a cache, holes and
left padding in the mask, grouped-query attention, Qwen2's q/k/v biases; which models it takes;
that it reads the live weights (an update is seen without rebuilding it); and its batched-product
decode attention against `scaled_dot_product_attention`, on an `AppendCache` written in place."""

from __future__ import annotations

import pytest
import torch
from helpers.nudging import write_lm
from transformers import DynamicCache

from nudgekit.inference import lean as lean_module
from nudgekit.inference.kvstore import AppendCache
from nudgekit.inference.lean import LeanForward, decode_attention
from nudgekit.models import load_model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request, tmp_path_factory):
    path = write_lm(tmp_path_factory.mktemp(request.param), "char", request.param, seed=4)
    m = load_model(str(path), device="cpu")
    m.eval()
    return m


def hf_step(model, cache, ids, mask, pos, keep=0):
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                     use_cache=True, logits_to_keep=keep).logits  # fmt: skip


def test_logits_match_the_transformers_forward_with_cache_holes_and_padding(model):
    lean, g = LeanForward(model), torch.Generator().manual_seed(0)
    b, w, m = 3, 9, 4
    ids0 = torch.randint(3, 40, (b, w), generator=g)
    mask0 = torch.ones(b, w, dtype=torch.long)
    mask0[1, :4] = 0  # left padding
    mask0[2, 3:5] = 0  # a hole (a rolled-back slot)
    pos0 = (mask0.cumsum(1) - 1).clamp(min=0)
    ids1 = torch.randint(3, 40, (b, m), generator=g)
    block = torch.ones(b, m, dtype=torch.long)
    block[0, :2] = 0  # row 0 feeds 2 of the block's 4 columns (right-aligned)
    mask1 = torch.cat([mask0, block], 1)
    pos1 = mask0.sum(1, keepdim=True) + torch.arange(m) - (m - block.sum(1, keepdim=True))
    caches = [DynamicCache(config=model.config) for _ in range(2)]
    ref = [
        hf_step(model, caches[0], ids0, mask0, pos0),
        hf_step(model, caches[0], ids1, mask1, pos1),
    ]
    got = [lean(ids0, mask0, pos0, caches[1]), lean(ids1, mask1, pos1, caches[1], 0)]
    for r, x, msk in zip(ref, got, (mask0, block)):
        valid = msk.bool()
        assert torch.allclose(r[valid], x[valid], atol=1e-5), (r[valid] - x[valid]).abs().max()
    valid = mask1.bool()  # the same keys/values were cached (padded slots hold anything)
    for a, c in zip(caches[0].layers, caches[1].layers):
        for x, y in ((a.keys, c.keys), (a.values, c.values)):
            assert torch.allclose(x.transpose(1, 2)[valid], y.transpose(1, 2)[valid], atol=1e-5)
    kept = lean(ids0, mask0, pos0, DynamicCache(config=model.config), 1)  # the last position
    assert kept.shape == (b, 1, model.config.vocab_size)
    assert torch.allclose(kept, ref[0][:, -1:], atol=1e-5)


def test_a_query_that_sees_nothing_stays_finite():
    mask = LeanForward.mask(torch.tensor([[0, 0, 1, 1]]), m=4)  # two pad slots first
    assert mask.shape == (1, 1, 4, 4)
    assert mask[0, 0, 0].all() and mask[0, 0, 1].all()  # padded queries see everything
    assert mask[0, 0, 2].tolist() == [False, False, True, False]  # causal over valid columns
    assert mask[0, 0, 3].tolist() == [False, False, True, True]
    bias = LeanForward.bias(torch.tensor([[0, 1, 1], [0, 0, 0]]))  # row 1: an empty row
    assert bias.tolist() == [[float("-inf"), 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert LeanForward.bias(torch.ones(2, 3, dtype=torch.long)) is None


def test_it_reads_the_live_weights(model):
    lean = LeanForward(model)
    ids = torch.tensor([[5, 6, 7]])
    mask, pos = torch.ones_like(ids), torch.arange(3)[None]
    before = lean(ids, mask, pos, DynamicCache(config=model.config))
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    try:
        after = lean(ids, mask, pos, DynamicCache(config=model.config))
        assert not torch.allclose(before, after)
        assert torch.allclose(after, hf_step(model, DynamicCache(config=model.config), ids, mask, pos),
                              atol=1e-5)  # fmt: skip
    finally:
        with torch.no_grad():
            model.model.layers[0].mlp.up_proj.weight.div_(1.5)


def test_supports_only_eval_llama_family(model):
    assert LeanForward.supports(model)
    model.train()
    try:
        assert not LeanForward.supports(model)
    finally:
        model.eval()
    model.config.model_type, kind = "gemma2", model.config.model_type
    try:
        assert not LeanForward.supports(model)
        with pytest.raises(ValueError, match="gemma2"):
            LeanForward(model)
    finally:
        model.config.model_type = kind


def test_decode_attention_matches_sdpa_on_column_views_with_grouped_heads_and_padding():
    g = torch.Generator().manual_seed(1)
    b, heads, kv, width, d = 3, 4, 2, 7, 5
    q = torch.randn(b, heads, 1, d, generator=g)
    buffers = torch.randn(2, b, kv, width + 9, d, generator=g)  # capacity beyond the width
    k, v = buffers[0, :, :, :width], buffers[1, :, :, :width]  # strided column views
    valid = torch.ones(b, width, dtype=torch.bool)
    valid[1, :3] = False  # left padding
    valid[2, 4] = False  # a hole
    bias = torch.zeros(b, width).masked_fill(~valid, float("-inf"))
    got = decode_attention(q, k, v, bias, scale=0.3)
    rep = heads // kv
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
        attn_mask=valid[:, None, None, :], scale=0.3)  # fmt: skip
    assert got.shape == (b, heads, 1, d)
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()
    # merging (row, head) of a column view is a view of the buffer, not a copy
    assert k.reshape(b * kv, width, d).data_ptr() == k.data_ptr()
    unmasked = decode_attention(q, k, v, None, scale=0.3)
    assert torch.allclose(unmasked[0], got[0], atol=1e-6)  # row 0 had no masked column


def test_append_cache_writes_in_place_and_selects_rows():
    g = torch.Generator().manual_seed(2)
    cache = AppendCache(batch=2)
    blocks = [torch.randn(2, 2, m, 3, generator=g) for m in (5, 1, 70)]  # grows past 64
    for layer in (0, 1):
        keys = []
        for blk in blocks:
            keys.append(blk + layer)
            got_k, got_v = cache.update(blk + layer, -(blk + layer), layer)
            assert torch.equal(got_k, torch.cat(keys, 2))
            assert torch.equal(got_v, -torch.cat(keys, 2))
    assert cache.widths == [76, 76]
    cache.batch_select_indices(torch.tensor([1, 1, 0]))  # share row 1 twice, keep row 0
    new = torch.randn(3, 2, 1, 3, generator=g)
    got_k, _ = cache.update(new, new, 0)
    assert torch.equal(got_k[:, :, :76], torch.cat(blocks, 2)[[1, 1, 0]])
    assert torch.equal(got_k[:, :, 76:], new)


def test_batched_decode_attention_gives_the_sdpa_logits(model, monkeypatch):
    """A decode step through `decode_attention` (on an `AppendCache`) vs SDPA (`DynamicCache`)."""
    calls = []
    monkeypatch.setattr(lean_module, "decode_attention",
                        lambda *a: calls.append(1) or decode_attention(*a))  # fmt: skip
    g = torch.Generator().manual_seed(3)
    b, w = 4, 8
    ids0 = torch.randint(3, 40, (b, w), generator=g)
    mask0 = torch.ones(b, w, dtype=torch.long)
    mask0[1, :5] = 0  # left padding
    pos0 = (mask0.cumsum(1) - 1).clamp(min=0)
    ids1 = torch.randint(3, 40, (b, 1), generator=g)
    mask1 = torch.cat([mask0, torch.ones(b, 1, dtype=torch.long)], 1)
    pos1 = pos0[:, -1:] + 1
    sdpa, bmm = LeanForward(model), LeanForward(model, bmm_decode_rows=b)
    c0, c1 = DynamicCache(config=model.config), AppendCache(b)
    ref = [sdpa(ids0, mask0, pos0, c0, 1), sdpa(ids1, mask1, pos1, c0, 1)]
    got = [bmm(ids0, mask0, pos0, c1, 1), bmm(ids1, mask1, pos1, c1, 1)]
    for r, x in zip(ref, got):
        assert torch.allclose(r, x, atol=1e-5), (r - x).abs().max()
    layers = model.config.num_hidden_layers
    assert len(calls) == layers  # the decode step only (the prefill feeds 8 tokens: SDPA)
    LeanForward(model, bmm_decode_rows=b + 1)(ids1, mask1[:, -1:], pos1, AppendCache(b), 1)
    assert len(calls) == layers  # fewer rows than the threshold: SDPA
