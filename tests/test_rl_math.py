"""GRPO advantage and loss math on hand-built tensors, cross-checked against TRL's loss."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from nudgekit.rl import (
    ClippedPolicyLoss,
    SeqMeanTokenMean,
    SeqMeanTokenSumNorm,
    TokenMean,
    entropy_from_logits,
    frac_reward_zero_std,
    group_advantages,
    k3_kl,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- advantages


def test_group_advantages_by_explicit_ids_not_position():
    # groups interleaved: g0 = rewards (1, 0) at positions 0 and 2, g1 = (0, 0) at 1 and 3
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    ids = torch.tensor([7, 3, 7, 3])
    adv = group_advantages(rewards, ids, scale="none")
    # g0 mean 0.5 -> (+0.5, -0.5); g1 mean 0 -> 0
    assert adv.tolist() == [0.5, 0.0, -0.5, 0.0]


def test_group_scale_uses_unbiased_group_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    ids = torch.tensor([0, 0, 0, 0])
    adv = group_advantages(rewards, ids, scale="group", eps=0.0)
    # mean 0.25, unbiased std = sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    assert adv.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])


def test_all_equal_group_gives_zero_advantage_without_nan():
    for scale in ("group", "batch", "none"):
        adv = group_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long), scale=scale)
        assert torch.equal(adv, torch.zeros(4)), scale
    adv = group_advantages(torch.zeros(3), torch.tensor([0, 1, 2]), scale="group")
    assert not torch.isnan(adv).any() and adv.abs().sum() == 0  # groups of one


def test_batch_scale_divides_by_batch_std():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    ids = torch.tensor([0, 0, 1, 1])
    adv = group_advantages(rewards, ids, scale="batch", eps=0.0)
    # group means 0.5 and 1 -> centred (0.5, -0.5, 0, 0); batch mean 0.75, unbiased
    # batch var = (3 * 0.25^2 + 0.75^2) / 3 = 0.25 -> std 0.5
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0])


def test_bad_scale_and_shapes_raise():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), scale="median")
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2), torch.zeros(3, dtype=torch.long))


def test_frac_reward_zero_std():
    # g0 (1,1) flat, g1 (0,1) informative, g2 (0,0) flat -> 2/3
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    assert frac_reward_zero_std(rewards, ids) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- loss


def test_clipping_arithmetic_by_hand():
    # one sequence, two tokens; advantage +1
    # token 0: ratio exp(0.5) = 1.65 > 1.2 -> clipped to 1.2 -> loss -1.2 (no gradient)
    # token 1: ratio exp(-0.5) = 0.61 -> min(0.61, 0.8) = 0.61 -> loss -0.61
    logp = torch.tensor([[0.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-0.5, -0.5]])
    loss_fn = ClippedPolicyLoss(epsilon_low=0.2, epsilon_high=0.2)
    loss, stats = loss_fn(logp, old, torch.tensor([1.0]), torch.ones(1, 2))
    expected = (-1.2 - math.exp(-0.5)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert logp.grad[0, 0] == 0.0  # clipped token carries no gradient
    assert logp.grad[0, 1] == pytest.approx(-math.exp(-0.5) / 2, abs=1e-6)
    assert stats["clip_frac/high"].item() == pytest.approx(0.5)
    assert stats["clip_frac/low"].item() == 0.0


def test_negative_advantage_clips_low():
    # advantage -1, ratio 0.5 < 0.8: -min(-0.5, -0.8) = 0.8 (clipped, no gradient)
    logp = torch.tensor([[math.log(0.5)]], requires_grad=True)
    loss, stats = ClippedPolicyLoss()(
        logp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1)
    )
    assert loss.item() == pytest.approx(0.8)
    assert stats["clip_frac/low"].item() == 1.0


def test_aggregations_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # token mean: (1 + 2 + 3 + 4) / 4 tokens
    assert TokenMean()(per_token, mask).item() == pytest.approx(2.5)
    # seq mean of token means: (2 + 4) / 2
    assert SeqMeanTokenMean()(per_token, mask).item() == pytest.approx(3.0)
    # Dr. GRPO: 10 / (2 seqs * max_len 5)
    assert SeqMeanTokenSumNorm(max_len=5)(per_token, mask).item() == pytest.approx(1.0)
    # global normalisers (gradient accumulation): 10 / 8 tokens, 6 / 4 seqs
    assert TokenMean()(per_token, mask, global_tokens=8).item() == pytest.approx(1.25)
    assert SeqMeanTokenMean()(per_token, mask, global_seqs=4).item() == pytest.approx(1.5)


def test_micro_batches_with_global_counts_equal_one_batch():
    B, T = 6, 5
    logp, old = torch.randn(B, T), torch.randn(B, T)
    adv, mask = torch.randn(B), (torch.rand(B, T) > 0.3).float()
    for agg in (TokenMean(), SeqMeanTokenMean(), SeqMeanTokenSumNorm(max_len=T)):
        fn = ClippedPolicyLoss(aggregation=agg)
        full, _ = fn(logp, old, adv, mask)
        parts = sum(
            fn(logp[s], old[s], adv[s], mask[s], global_tokens=int(mask.sum()), global_seqs=B)[0]
            for s in (slice(0, 2), slice(2, 6))
        )
        assert parts.item() == pytest.approx(full.item(), abs=1e-6), type(agg).__name__


def test_kl_term_and_requirement():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    # k3 at token 0: exp(log .25 - log .5) - (log .25 - log .5) - 1 = 0.5 + ln 2 - 1
    kl = k3_kl(logp, ref)
    assert kl[0, 0].item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl[0, 1].item() == pytest.approx(0.0)
    with pytest.raises(ValueError):
        ClippedPolicyLoss(beta=0.1)(logp, logp, torch.ones(1), torch.ones(1, 2))


def test_entropy_from_logits():
    uniform = torch.zeros(2, 3, 8)
    assert torch.allclose(entropy_from_logits(uniform), torch.full((2, 3), math.log(8)))


# ---------------------------------------------------------------- cross-check against TRL


def _trl_loss(loss_type, logp, old, adv, mask, beta, ref, eps_low, eps_high, num_items=None):
    """TRL's own `GRPOTrainer._compute_loss`, run on given log-probs (no model, no trainer)."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    accel = SimpleNamespace(
        num_processes=1,
        sync_gradients=True,
        gather=lambda x: x,
        gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction="sum": x,
    )
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=False),
        current_gradient_accumulation_steps=1,
        max_completion_length=logp.shape[1],
        accelerator=accel,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
    )
    B, T = logp.shape
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
    }
    if num_items is not None:
        inputs["num_items_in_batch"] = torch.tensor(float(num_items))
    return GRPOTrainer._compute_loss(stub, None, inputs)


CROSS_CHECK = [
    # (nudgekit aggregation, TRL loss_type, pass a global token count)
    ("token_mean", "bnpo", False),
    ("token_mean", "dapo", True),
    ("seq_mean_token_mean", "grpo", False),
    ("seq_mean_token_sum_norm", "dr_grpo", False),
]


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("mode,trl_type,global_count", CROSS_CHECK)
def test_loss_matches_trl(mode, trl_type, global_count, beta):
    pytest.importorskip("trl")
    B, T = 8, 12
    for trial in range(5):
        torch.manual_seed(trial)
        logp = (torch.randn(B, T) * 0.3 - 1.0).requires_grad_(True)
        old = logp.detach() + torch.randn(B, T) * 0.2
        ref = logp.detach() + torch.randn(B, T) * 0.2
        adv = torch.randn(B)
        mask = (torch.rand(B, T) > 0.25).float()
        mask[:, 0] = 1.0
        agg = {
            "token_mean": TokenMean(),
            "seq_mean_token_mean": SeqMeanTokenMean(),
            "seq_mean_token_sum_norm": SeqMeanTokenSumNorm(max_len=T),
        }[mode]
        fn = ClippedPolicyLoss(epsilon_low=0.2, epsilon_high=0.28, beta=beta, aggregation=agg)
        ours, _ = fn(
            logp,
            old,
            adv,
            mask,
            ref_logprobs=ref if beta else None,
            global_tokens=int(mask.sum()) if global_count else None,
        )
        theirs = _trl_loss(
            trl_type,
            logp,
            old,
            adv,
            mask,
            beta,
            ref,
            0.2,
            0.28,
            num_items=int(mask.sum()) if global_count else None,
        )
        assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
        g_ours = torch.autograd.grad(ours, logp, retain_graph=True)[0]
        g_theirs = torch.autograd.grad(theirs, logp)[0]
        assert torch.allclose(g_ours, g_theirs, atol=1e-6)
