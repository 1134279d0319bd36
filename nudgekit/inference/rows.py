"""Row helpers for `RowCache`: what a row can keep (`common_prefix`) and which rows share a
forward pass (`plan_groups`).

In a nudging tick the rows want very different amounts of work from one model: most feed one
token (a decode step) or nothing (they wait on the other model), a few feed tens of tokens (a
draft to probe, or the shared text re-tokenised after the other model wrote). A forward over the
whole batch pays for every row at the longest row's length, so rows that feed are grouped by
length (`plan_groups`) and each group runs alone on its rows' caches, gathered out of the
`kvstore.KVStore` that holds every row; rows outside the group get a hole there, exactly
as a row that feeds nothing in a whole-batch forward does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def plan_groups(lengths: dict[int, int], forward_cost: float) -> list[list[int]]:
    """Split feeding rows into forward groups minimising padded row-tokens plus a fixed cost.

    A group costs `forward_cost + rows * longest feed` (in row-tokens). With rows sorted by feed
    length the best split is a set of contiguous runs, and no run needs to end inside a set of
    equal lengths (moving the rest of that set into the run costs no more than leaving it to a
    later run, whose longest feed is at least as long), so dynamic programming runs over the
    distinct lengths: in a decode tick most rows feed one token, so that is a handful.

    Args:
        lengths: row -> tokens it feeds (>= 1).
        forward_cost: the fixed cost of one forward pass, in row-tokens.

    Returns:
        Groups of rows (each sorted), shortest feeds first.
    """
    if forward_cost == math.inf:
        return [sorted(lengths)] if lengths else []
    by_length: dict[int, list[int]] = {}
    for r in sorted(lengths):
        by_length.setdefault(lengths[r], []).append(r)
    sizes = sorted(by_length)
    n = len(sizes)
    rows_upto = [0]  # rows in the first j distinct lengths
    for size in sizes:
        rows_upto.append(rows_upto[-1] + len(by_length[size]))
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + forward_cost + (rows_upto[j] - rows_upto[i]) * sizes[j - 1]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(sorted(r for size in sizes[cut[j] : j] for r in by_length[size]))
        j = cut[j]
    return groups[::-1]


def can_split(config: Any) -> bool:
    """Whether every layer of the model's cache is a plain growing one (a sliding-window layer
    keeps fewer columns than the mask, so its rows cannot be moved column for column)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences (bisected with slice
    comparisons, which run in C: these sequences are whole prompts plus answers)."""
    if type(a) is not type(b):  # a list never equals a tuple
        a, b = list(a), list(b)
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo
