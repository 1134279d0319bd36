"""Sub-batches for `RowCache`: which rows share a forward pass, and moving their KV in and out.

In a nudging tick the rows want very different amounts of work from one model: most feed one
token (a decode step) or nothing (they wait on the other model), a few feed tens of tokens (a
draft to probe, or the shared text re-tokenised after the other model wrote). A forward over the
whole batch pays for every row at the longest row's length, so rows that feed are grouped by
length (`plan_groups`) and each group runs alone on a gathered copy of its rows' caches
(`gather`), whose new columns are written back into the full cache (`scatter`); rows outside the
group get a hole there, exactly as a row that feeds nothing in a whole-batch forward does.
"""

from __future__ import annotations

import math
from typing import Any

import torch


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


class KVStore:
    """Every row's keys and values, per layer, in buffers `[batch, heads, capacity, dim]`.

    A forward runs on a `DynamicCache` made by `view` (a copy of the group's rows, or for the
    whole batch a view the model's own concatenation copies), and `write` puts only the new
    columns back. Capacity doubles when full, so appending costs the new columns, not a copy of
    the whole cache per forward as a growing `DynamicCache` does.
    """

    def __init__(self, config: Any, batch: int) -> None:
        self.config, self.batch = config, batch
        self.buffers: list[list[torch.Tensor]] = []  # per layer [keys, values]

    def view(self, rows: torch.Tensor | None, width: int) -> Any:
        """A `DynamicCache` holding columns `[0, width)` of `rows` (None: all rows)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        if width == 0:
            return cache
        for layer, (keys, values) in zip(cache.layers, self.buffers):
            k, v = keys[:, :, :width], values[:, :, :width]
            if rows is not None:
                k, v = k.index_select(0, rows), v.index_select(0, rows)
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
        return cache

    def write(self, cache: Any, rows: torch.Tensor | None, width: int, new: int) -> None:
        """Store the last `new` columns of `cache` (after a forward) at columns `width...`."""
        if not self.buffers:
            self.buffers = [[self._alloc(t, new) for t in (layer.keys, layer.values)]
                            for layer in cache.layers]  # fmt: skip
        for layer, pair in zip(cache.layers, self.buffers):
            for j, t in enumerate((layer.keys, layer.values)):
                if width + new > pair[j].shape[2]:
                    grown = self._alloc(pair[j], 2 * (width + new))
                    grown[:, :, :width] = pair[j][:, :, :width]
                    pair[j] = grown
                part = t[:, :, -new:]
                if rows is None:
                    pair[j][:, :, width : width + new] = part
                else:
                    pair[j][rows, :, width : width + new] = part

    def compact(self, index: torch.Tensor, width: int) -> None:
        """Keep, per row, the columns `index[row]` (`[batch, n]`) of `[0, width)`."""
        for pair in self.buffers:
            for j, t in enumerate(pair):
                cols = index[:, None, :, None].expand(t.shape[0], t.shape[1], -1, t.shape[3])
                kept = t[:, :, :width].gather(2, cols)
                pair[j] = self._alloc(t, 2 * index.shape[1] + 1)
                pair[j][:, :, : index.shape[1]] = kept

    def _alloc(self, like: torch.Tensor, capacity: int) -> torch.Tensor:
        return like.new_zeros((self.batch, like.shape[1], max(capacity, 64), like.shape[3]))
