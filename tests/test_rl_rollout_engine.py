"""The rollout-engine seam (`nudgekit.rl.rollout_engine`) and truncated importance sampling
(`nudgekit.rl.tis`) on hand-built tensors and a tiny real model; vLLM itself is tested in the
vLLM tier (tests/vllm_tier/test_vllm_rollouts.py)."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from nudgekit.engines.hf import HFEngine
from nudgekit.rl import ClippedPolicyLoss
from nudgekit.rl.rollout_engine import LiveEngine, build, launcher_kwargs, policy_weights
from nudgekit.rl.tis import tis_stats, tis_weights


def test_tis_weights_truncate_and_mask():
    old = torch.tensor([[0.0, -1.0, -2.0], [-0.5, 0.0, 0.0]])
    sampled = torch.tensor([[0.0, -2.0, -1.0], [-0.5, -3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    w = tis_weights(old, sampled, mask, cap=2.0)
    expect = torch.tensor([[1.0, 2.0, math.exp(-1.0)], [1.0, 2.0, 0.0]])  # e^1, e^3 capped at 2
    assert torch.allclose(w, expect)
    stats = tis_stats(w, mask, 2.0)
    assert stats["tis/clip_frac"].item() == pytest.approx(2 / 5)
    assert stats["tis/weight"].item() == pytest.approx((1 + 2 + math.exp(-1) + 1 + 2) / 5)
    with pytest.raises(ValueError, match="tis_cap"):
        tis_weights(old, sampled, mask, cap=0.0)


def test_tis_weights_are_constants_in_the_loss():
    """Weights scale each token's policy term (gradient included) and leave the KL term alone."""
    torch.manual_seed(0)
    lp = torch.randn(2, 3, requires_grad=True)
    old, ref = lp.detach() + 0.05, lp.detach() - 0.1
    adv, mask = torch.tensor([1.0, -0.5]), torch.ones(2, 3)
    w = torch.tensor([[1.0, 0.5, 2.0], [0.0, 1.0, 1.5]], requires_grad=True)
    plain = ClippedPolicyLoss(beta=0.0)
    loss_w, _ = plain(lp, old, adv, mask, token_weights=w)
    loss_w.backward()
    g_w = lp.grad.clone()
    lp.grad = None
    # the same as weighting the mask of a token-sum with a fixed denominator
    loss_ref, _ = plain(lp, old, adv, mask * w.detach(), global_tokens=6)
    loss_ref.backward()
    assert torch.allclose(loss_w, loss_ref) and torch.allclose(g_w, lp.grad)
    assert w.grad is None
    kl_only = ClippedPolicyLoss(beta=1.0)
    zero_adv = torch.zeros(2)
    a, _ = kl_only(lp, old, zero_adv, mask, ref, token_weights=w)
    b, _ = kl_only(lp, old, zero_adv, mask, ref)
    assert torch.allclose(a, b)


def test_launcher_kwargs():
    assert launcher_kwargs(1) == {}
    assert launcher_kwargs(2) == {"distributed_executor_backend": "external_launcher"}


def test_policy_weights_is_the_state_dict_tied_weights_included(tiny_qwen_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir)
    model.tie_weights()
    state = model.state_dict()
    pairs = list(policy_weights(model))
    assert [k for k, _ in pairs] == list(state)  # state_dict order, every name once
    assert all(t is state[k] or torch.equal(t, state[k]) for k, t in pairs)
    got = dict(pairs)
    if model.config.tie_word_embeddings:
        assert got["lm_head.weight"].data_ptr() == got["model.embed_tokens.weight"].data_ptr()


def test_build_wraps_a_plain_engine_as_live(tiny_qwen_dir):
    from nudgekit.models import ModelSpec

    spec = ModelSpec(str(tiny_qwen_dir))
    module, tok = spec.load_model(), spec.load_tokenizer()
    engine = build(functools.partial(HFEngine, max_batch_size=4), module, tok)
    assert isinstance(engine, LiveEngine) and not engine.syncs_weights
    assert engine.engine.model is module
    engine.before_update()
    engine.after_update(None)  # nothing to push, no backend needed
    engine.close()
    assert engine.engine is None
