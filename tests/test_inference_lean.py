"""`inference.lean`: grouped-query attention that reads the key/value heads in place
(`enable_gqa`) gives bit for bit the logits of repeating them, through both caches the lean
forward runs on (a `KVStore` with ready masks, and the engine's growing cache)."""

from __future__ import annotations

import pytest
import torch

from nudgekit.engines import GenerationRequest, HFEngine
from nudgekit.inference import SyncRequest, lean, row_cache
from nudgekit.models import load_model, load_tokenizer

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not lean._GQA, reason="torch < 2.5 has no enable_gqa"),
]


@pytest.fixture(scope="module")
def model(tiny_qwen_dir):
    model = load_model(tiny_qwen_dir).eval()
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    assert lean.LeanForward.supports(model)
    return model


def row_cache_logits(model) -> list[torch.Tensor]:
    """Rows of different lengths: prefills (longer than `GQA_QUERIES`: repeated heads), then
    one-token steps, a rollback and a short re-feed (in place)."""
    cache = row_cache(model, 3, pad_id=0)
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 23, 12)]
    out = [cache.sync([SyncRequest(r, ids[r]) for r in range(3)])]
    for step in range(6):
        for r in range(3):
            ids[r].append(10 + 7 * step + r)
        out.append(cache.sync([SyncRequest(r, ids[r]) for r in range(3)]))
    ids[1] = ids[1][:-3] + [42, 43]  # roll back three tokens, feed two
    out.append(cache.sync([SyncRequest(1, ids[1], wanted=[len(ids[1]) - 1])]))
    return [t for got in out for d in got for t in d.values()]


def test_in_place_gqa_gives_the_logits_of_repeated_heads(model, monkeypatch):
    with_gqa = row_cache_logits(model)
    monkeypatch.setattr(lean, "_GQA", False)
    repeated = row_cache_logits(model)
    assert all(torch.equal(a, b) for a, b in zip(with_gqa, repeated, strict=True))


def test_engine_samples_are_the_same_with_in_place_gqa(model, tiny_qwen_dir, monkeypatch):
    engine = HFEngine(model, load_tokenizer(tiny_qwen_dir))
    reqs = [
        GenerationRequest(p, n=3, max_new_tokens=8, seed=4, logprobs=True, top_logprobs=True)
        for p in ("Hello world!", "Question: what is 12 + 30? Answer:")
    ]

    def run():
        return [(s.token_ids, s.logprobs, s.top_logprobs) for r in engine.generate(reqs)
                for s in r.samples]  # fmt: skip

    with_gqa = run()
    monkeypatch.setattr(lean, "_GQA", False)
    assert run() == with_gqa
