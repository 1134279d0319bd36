"""Pure sampling math on hand-built logits: temperature, top-p, inverse-CDF draws, seeds."""

from __future__ import annotations

import math

import torch

from nudgekit.engines.sampling import (
    derive_seed,
    inverse_cdf_sample,
    row_uniforms,
    sample_step,
    scale_logits,
    top_p_filter,
)


def _logits(probs):
    return torch.tensor([probs]).log()


def test_scale_logits_divides_and_keeps_greedy_rows():
    logits = torch.tensor([[2.0, -4.0], [2.0, -4.0]])
    out = scale_logits(logits, torch.tensor([2.0, 0.0]))
    assert torch.equal(out, torch.tensor([[1.0, -2.0], [2.0, -4.0]]))


def test_top_p_keeps_smallest_nucleus():
    logits = _logits([0.05, 0.5, 0.15, 0.3])  # unsorted on purpose

    def kept(p):
        return torch.isfinite(top_p_filter(logits, torch.tensor([p])))[0].tolist()

    assert kept(0.5) == [False, True, False, False]
    assert kept(0.79) == [False, True, False, True]  # 0.5 + 0.3 already covers 0.79
    assert kept(0.81) == [False, True, True, True]
    assert kept(1e-6) == [False, True, False, False]  # the top token always survives
    assert kept(1.0) == [True, True, True, True]


def test_top_p_is_per_row():
    logits = torch.cat([_logits([0.6, 0.4]), _logits([0.6, 0.4])])
    out = top_p_filter(logits, torch.tensor([0.5, 1.0]))
    assert torch.isinf(out[0, 1]) and torch.isfinite(out[1]).all()


def test_inverse_cdf_picks_first_bin_past_u():
    logits = _logits([0.25, 0.25, 0.5]).expand(5, 3)
    ids = inverse_cdf_sample(logits, torch.tensor([0.0, 0.1, 0.3, 0.6, 0.999999]))
    assert ids.tolist() == [0, 0, 1, 2, 2]


def test_inverse_cdf_never_draws_masked_tokens():
    logits = torch.tensor([[float("-inf"), 0.0, float("-inf")]]).expand(4, 3)
    assert inverse_cdf_sample(logits, torch.tensor([0.0, 0.3, 0.7, 0.9999])).tolist() == [1] * 4


def test_inverse_cdf_matches_distribution():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    u = torch.rand(40_000, generator=torch.Generator().manual_seed(0))
    ids = inverse_cdf_sample(probs.log().expand(len(u), 4), u)
    freq = torch.bincount(ids, minlength=4).float() / len(u)
    assert torch.allclose(freq, probs, atol=0.01)


def test_sample_step_logprob_conventions():
    logits = torch.tensor([[1.0, 3.0, 0.5], [1.0, 3.0, 0.5]])
    temp = torch.tensor([0.0, 0.5])
    ids, lp, top_ids, top_lp = sample_step(logits, temp, torch.ones(2), torch.tensor([0.5, 0.0]))
    # greedy row: argmax, log-prob at temperature 1
    assert ids[0] == 1 and math.isclose(lp[0], logits[0].log_softmax(-1)[1].item(), rel_tol=1e-6)
    # sampled row (u=0 -> first token): log-prob under log_softmax(logits / T), before top-p
    assert ids[1] == 0
    assert math.isclose(lp[1], (logits[1] / 0.5).log_softmax(-1)[0].item(), rel_tol=1e-6)
    assert top_ids.tolist() == [1, 1]
    assert math.isclose(top_lp[1], (logits[1] / 0.5).log_softmax(-1)[1].item(), rel_tol=1e-6)


def test_sample_step_top_p_restricts_draws():
    logits = _logits([0.7, 0.2, 0.1]).expand(3, 3)
    ids, *_ = sample_step(
        logits, torch.ones(3), torch.full((3,), 0.6), torch.tensor([0.0, 0.5, 0.99])
    )
    assert ids.tolist() == [0, 0, 0]


def test_seeds_are_stable_and_rows_independent():
    assert derive_seed(7, 0) == derive_seed(7, 0)
    assert len({derive_seed(7, j) for j in range(100)} | {derive_seed(8, 0)}) == 101
    a = row_uniforms([derive_seed(1, 0), derive_seed(1, 1)], 16)
    b = row_uniforms([derive_seed(5, 3), derive_seed(1, 1)], 16)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[0], b[0])
    assert ((a >= 0) & (a < 1)).all()
