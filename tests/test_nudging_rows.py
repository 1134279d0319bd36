"""Sub-batch forwards of `RowCache`: the grouping plan, and that running only the feeding rows
(in one group or split by feed length, through the KV store) gives the same logits as fresh
forwards and as whole-batch forwards."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.nudging import engine, model_dirs

from nudgekit.inference import RaggedRowCache, SyncRequest, row_cache
from nudgekit.inference.kvstore import KVStore
from nudgekit.inference.rows import common_prefix, plan_groups
from nudgekit.nudging.text import encode


def test_plan_groups_separates_long_feeds_when_forwards_are_cheap():
    lengths = {0: 1, 1: 1, 2: 30, 3: 1, 4: 2}
    assert plan_groups(lengths, forward_cost=math.inf) == [[0, 1, 2, 3, 4]]
    assert plan_groups(lengths, forward_cost=8) == [[0, 1, 3, 4], [2]]
    assert plan_groups(lengths, forward_cost=0) == [[0, 1, 3], [4], [2]]
    assert plan_groups({}, forward_cost=8) == []
    # a plan never costs more than one forward over every row
    costs = {1: 1, 5: 3, 7: 9, 2: 4}
    groups = plan_groups(costs, forward_cost=5)
    total = sum(5 + len(g) * max(costs[r] for r in g) for g in groups)
    assert total <= 5 + len(costs) * max(costs.values())
    assert sorted(r for g in groups for r in g) == sorted(costs)


def row_level_best(lengths: dict[int, int], forward_cost: float) -> float:
    """The cheapest split by dynamic programming over single rows (sorted by length)."""
    feeds = sorted(lengths.values())
    best = [0.0] + [math.inf] * len(feeds)
    for j in range(1, len(feeds) + 1):
        best[j] = min(best[i] + forward_cost + (j - i) * feeds[j - 1] for i in range(j))
    return best[-1]


def test_plan_groups_over_distinct_lengths_is_as_cheap_as_over_rows():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, 20, (), generator=g))
        feeds = torch.randint(1, 6, (n,), generator=g) ** 2  # few distinct lengths, repeats
        lengths = {r: int(x) for r, x in enumerate(feeds)}
        cost = float(torch.randint(0, 40, (), generator=g))
        groups = plan_groups(lengths, cost)
        assert sorted(r for grp in groups for r in grp) == sorted(lengths)
        total = sum(cost + len(grp) * max(lengths[r] for r in grp) for grp in groups)
        assert total == row_level_best(lengths, cost), (trial, lengths, cost)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return engine(model_dirs(tmp_path_factory)["base"])


def fresh_logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


TEXTS = [
    "Question: Start 3: inc dbl\nAnswer:",
    "Question: Start 7: neg\nAnswer: do neg",
    "Question: Start 1: inc inc inc\nAnswer: inc 2",
    "Question: Start 5: dbl\nAnswer: dbl 10\nSo",
]


@pytest.mark.parametrize("forward_cost, lean", [(math.inf, True), (2.0, True), (math.inf, False)])
def test_sub_batch_forwards_match_fresh_and_whole_batch_forwards(base, forward_cost, lean):
    """(`lean`: the model runs through `LeanForward`, or through its own forward.)"""
    model, tok = base.model, base.tokenizer
    split = row_cache(model, batch=4, pad_id=tok.pad_token_id, forward_cost=forward_cost, lean=lean)
    assert (split.lean is not None) == lean
    whole = row_cache(model, batch=4, pad_id=tok.pad_token_id, compact_slack=0, lean=lean)
    # every forward runs over all four rows (rows that do not feed get padding)
    whole._groups = lambda lengths: [(sorted(lengths), [0, 1, 2, 3])] if lengths else []
    assert split.store is not None
    ids = [encode(tok, t) for t in TEXTS]
    steps = [
        {0: ids[0], 1: ids[1], 2: ids[2], 3: ids[3]},  # prompts of different lengths
        {1: ids[1] + encode(tok, " 3")[:1], 3: encode(tok, TEXTS[3] + " the result is 10")},
        {0: ids[0] + [ids[0][-1]], 2: ids[2][:-2], 3: ids[3] + [ids[3][-1]]},  # one rolls back
        {0: encode(tok, TEXTS[0] + " inc 4\ndbl 8"), 1: ids[1], 2: ids[2]},
    ]
    for step in steps:
        reqs = [SyncRequest(r, t) for r, t in step.items()]
        got, ref = split.sync(reqs), whole.sync(reqs)
        for req, a, b in zip(reqs, got, ref):
            n = len(req.target)
            assert torch.allclose(a[n], fresh_logits(model, req.target), atol=1e-4)
            assert torch.allclose(a[n], b[n], atol=1e-4)
    assert split.ids == whole.ids
    # rows outside a forward were left alone: a row that idled still answers from its cache
    again = split.sync([SyncRequest(3, steps[2][3] + ids[3][-1:])])[0]
    target = steps[2][3] + ids[3][-1:]
    assert torch.allclose(again[len(target)], fresh_logits(model, target), atol=1e-4)
    if forward_cost != math.inf:
        assert split.forwards > whole.forwards  # long and short feeds went in separate passes


@pytest.mark.parametrize("forward_cost", [math.inf, 4.0])
def test_ragged_rows_match_fresh_forwards_through_random_grow_and_rollback(base, forward_cost):
    """Thirty ticks of random work on five ragged rows: each tick some rows grow by one token or
    by 1-12, roll back into their text (and branch), restart from an empty row, or idle (an idle
    row may sit in a whole-batch forward); every answer equals a fresh forward of the row's
    target."""
    model, tok = base.model, base.tokenizer
    cache = row_cache(model, batch=5, pad_id=tok.pad_token_id, forward_cost=forward_cost)
    assert isinstance(cache, RaggedRowCache)
    g = torch.Generator().manual_seed(3)
    vocab = model.config.vocab_size
    rand = lambda hi: int(torch.randint(0, hi, (), generator=g))  # noqa: E731
    held: list[list[int]] = [[] for _ in range(5)]
    expected_fed = 0
    for _ in range(30):
        reqs = []
        for r in range(5):
            action = rand(5)
            if action == 0 and held[r]:  # idle this tick
                continue
            target = list(held[r])
            if action == 1 and len(target) > 1:  # roll back, then branch
                target = target[: 1 + rand(len(target) - 1)]
            elif action == 2:  # a new question
                target = []
            grow = 1 if rand(2) else 1 + rand(12)  # decode steps (whole-batch ticks) or feeds
            target += [rand(vocab) for _ in range(grow)]
            reqs.append(SyncRequest(r, target))
            expected_fed += len(target) - common_prefix(held[r], target)
        for req, got in zip(reqs, cache.sync(reqs)):
            n = len(req.target)
            assert torch.allclose(got[n], fresh_logits(model, req.target), atol=1e-4)
            held[req.row] = req.target
    assert cache.ids == held
    assert cache.fed == expected_fed  # each row kept its common prefix and fed only the rest


def block(batch: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, m, 3, generator=g), torch.randn(batch, 2, m, 3, generator=g)


def test_store_writes_only_the_forward_rows_and_compacts_in_place():
    store = KVStore(config=None, batch=3)
    k0, v0 = block(3, 4, seed=5)
    store.put(0, None, 0, k0, v0)
    rows = torch.tensor([0, 2])
    k1, v1 = block(2, 2, seed=6)
    keys, values = store.put(0, rows, 4, k1, v1)  # rows 0 and 2 feed two tokens
    assert torch.equal(keys[[0, 2], :, :6], torch.cat([k0[[0, 2]], k1], dim=2))
    assert torch.equal(values[[0, 2], :, :6], torch.cat([v0[[0, 2]], v1], dim=2))
    assert torch.equal(keys[1, :, 4:6], torch.zeros(2, 2, 3))  # row 1's hole stays zeros
    # keep columns (1, 5) of row 0, (0, 1) of row 1, (4, 5) of row 2
    index = torch.tensor([[1, 5], [0, 1], [4, 5]])
    before = keys[:, :, :6].clone()
    store.compact(index, 6)
    for r in range(3):
        assert torch.equal(store.buffers[0][0][r, :, :2], before[r, :, index[r]])
    assert torch.isfinite(store.buffers[0][0]).all()


def test_store_scatter_writes_each_row_at_its_own_columns():
    """`KVStore.scatter`: slot [i, j] lands at column cols[i, j] of its row (rows of different
    lengths, no holes); attention gets the rows' first `width` columns; growth keeps every
    column already written."""
    store = KVStore(config=None, batch=3)
    k0, v0 = block(3, 2, seed=7)
    cols = torch.tensor([[0, 1], [0, 1], [0, 1]])
    store.scatter(None, cols, 2, need=3).update(k0, v0, 0)
    capacity = store.buffers[0][0].shape[2]
    # rows 0 and 2 feed: row 0 one token at position 2 (its first slot is padding, written past
    # its end), row 2 two tokens at positions 1..2 (rolled back over its old column 1)
    k1, v1 = block(2, 2, seed=8)
    rows = torch.tensor([0, 2])
    cols = torch.tensor([[3, 2], [1, 2]])
    got_k, got_v = store.scatter(rows, cols, 3, need=capacity + 5).update(k1, v1, 0)
    keys, values = store.buffers[0]
    assert keys.shape[2] >= capacity + 5  # grown
    assert torch.equal(keys[0, :, :2], k0[0]) and torch.equal(keys[0, :, 2], k1[0, :, 1])
    assert torch.equal(keys[0, :, 3], k1[0, :, 0])  # the padded slot, past row 0's end
    assert torch.equal(keys[1, :, :2], k0[1])  # row 1 left alone
    assert torch.equal(keys[2, :, 0], k0[2, :, 0]) and torch.equal(keys[2, :, 1:3], k1[1])
    assert torch.equal(values[2, :, 1:3], v1[1])
    assert torch.equal(got_k, keys[[0, 2], :, :3]) and torch.equal(got_v, values[[0, 2], :, :3])
