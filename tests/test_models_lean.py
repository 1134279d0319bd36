"""`LeanForward` against the `transformers` forward it replaces: logits with a cache, holes and
left padding in the mask, grouped-query attention, Qwen2's q/k/v biases; which models it takes;
and that it reads the live weights (an update is seen without rebuilding it)."""

from __future__ import annotations

import pytest
import torch
from nudging_support import write_lm
from transformers import DynamicCache

from nudgekit.models import load_model
from nudgekit.models.lean import LeanForward


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
