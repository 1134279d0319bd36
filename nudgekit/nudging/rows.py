"""Sub-batches for `RowCache`: which rows share a forward pass.

In a nudging tick the rows want very different amounts of work from one model: most feed one
token (a decode step) or nothing (they wait on the other model), a few feed tens of tokens (a
draft to probe, or the shared text re-tokenised after the other model wrote). A forward over the
whole batch pays for every row at the longest row's length, so rows that feed are grouped by
length (`plan_groups`) and each group runs alone on its rows' caches, gathered out of the
`models.kvstore.KVStore` that holds every row; rows outside the group get a hole there, exactly
as a row that feeds nothing in a whole-batch forward does.
"""

from __future__ import annotations

import math
from typing import Any


def plan_groups(lengths: dict[int, int], forward_cost: float) -> list[list[int]]:
    """Split feeding rows into forward groups minimising padded row-tokens plus a fixed cost.

    A group costs `forward_cost + rows * longest feed` (in row-tokens): with rows sorted by feed
    length the best split is a set of contiguous runs, found by dynamic programming (n <= batch).

    Args:
        lengths: row -> tokens it feeds (>= 1).
        forward_cost: the fixed cost of one forward pass, in row-tokens.

    Returns:
        Groups of rows (each sorted), shortest feeds first.
    """
    if forward_cost == math.inf:
        return [sorted(lengths)] if lengths else []
    rows = sorted(lengths, key=lambda r: (lengths[r], r))
    n = len(rows)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[rows[j - 1]]
        for i in range(j):
            cost = best[i] + forward_cost + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(sorted(rows[cut[j] : j]))
        j = cut[j]
    return groups[::-1]


def can_split(config: Any) -> bool:
    """Whether every layer of the model's cache is a plain growing one (a sliding-window layer
    keeps fewer columns than the mask, so its rows cannot be moved column for column)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)
