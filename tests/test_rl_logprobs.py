"""`shared_prefix_logprobs` (each distinct prompt run once) equals `token_logprobs` (every row
run as prompt ++ completion): same log-probs, entropies and gradients, on a real tiny Qwen2."""

from __future__ import annotations

import pytest
import torch

from nudgekit.models import load_model
from nudgekit.rl import Rollout, collate, token_logprobs
from nudgekit.rl.logprobs import shared_prefix_logprobs, supports_shared_prefix


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rollout(prompt, completion, reason="eos"):
    return Rollout(
        problem_id="p",
        group_id=0,
        prompt_ids=prompt,
        completion_ids=completion,
        sample_logprobs=[0.0] * len(completion),
        text="",
        finish_reason=reason,
        answer="",
        advantage=1.0,
    )


def _batch(seed=0):
    """Two prompts of different lengths (left padding), 3 rows each, ragged completions, plus
    a 'hinted' row whose prompt shares the first prompt's tail but not its ids."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(3, 60, (n,), generator=g).tolist()  # noqa: E731
    p1, p2 = ids(7), ids(4)
    rows = [_rollout(p1, ids(n)) for n in (5, 1, 9)] + [_rollout(p2, ids(n)) for n in (9, 3, 6)]
    rows.append(_rollout(ids(2) + p1, ids(4), "length"))
    rows.insert(2, _rollout(p2, ids(2)))  # groups need not be contiguous
    return collate(rows, pad_id=0)


def _grads(model, fn, batch):
    model.zero_grad(set_to_none=True)
    lp, ent = fn(model, batch, 0.7, True)
    mask = batch.completion_mask
    ((lp * mask).sum() / mask.sum()).backward()
    return lp.detach(), ent, {k: p.grad.clone() for k, p in model.named_parameters()}


def test_prompt_groups_follow_exact_prompt_ids():
    batch = _batch()
    index, firsts = batch.prompt_groups()
    assert len(firsts) == 3  # p1, p2 and the hinted prompt
    for row in range(len(batch)):
        first = firsts[index[row]]
        assert torch.equal(
            batch.input_ids[row, : batch.prompt_width], batch.input_ids[first, : batch.prompt_width]
        )
    assert index.tolist()[:4] == [index[0].item()] * 2 + [index[2].item()] + [index[0].item()]


def test_shared_prefix_matches_full_rows_in_values_and_gradients(tiny_qwen_dir):
    model = load_model(str(tiny_qwen_dir)).train()
    assert supports_shared_prefix(model)
    batch = _batch()
    lp_ref, ent_ref, g_ref = _grads(model, token_logprobs, batch)
    lp, ent, g = _grads(model, shared_prefix_logprobs, batch)
    mask = batch.completion_mask.bool() | (batch.completion_ids != 0)
    torch.testing.assert_close(lp[mask], lp_ref[mask], atol=2e-5, rtol=0)
    torch.testing.assert_close(ent[mask], ent_ref[mask], atol=2e-5, rtol=0)
    for name, grad in g_ref.items():
        torch.testing.assert_close(g[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_single_token_completions(tiny_qwen_dir):
    model = load_model(str(tiny_qwen_dir)).eval()
    batch = collate([_rollout([5, 6, 7], [8]), _rollout([5, 6, 7], [9]), _rollout([4], [3])], 0)
    with torch.no_grad():
        ref, _ = token_logprobs(model, batch)
        got, _ = shared_prefix_logprobs(model, batch)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
