"""Sub-batches for `RowCache`: which rows share a forward pass.

In a nudging tick the rows want very different amounts of work from one model: most feed one
token (a decode step) or nothing (they wait on the other model), a few feed tens of tokens (a
draft to probe, or the shared text re-tokenised after the other model wrote). A forward over the
whole batch pays for every row at the longest row's length, so rows that feed are grouped by
length (`plan_groups`) and each group runs alone on its rows' caches, gathered out of the
`KVStore` that holds every row; rows outside the group get a hole there, exactly
as a row that feeds nothing in a whole-batch forward does.
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

    Two ways to run a forward on it:

    - `lean(rows, width)` (for `models.lean.LeanForward`): a cache whose `update` writes the
      block's new columns straight into the buffers and hands the model the rows' columns
      `[0, width + m)`: one gather per layer (none for the whole batch, which gets a view),
      nothing to concatenate or write back;
    - `view(rows, width)` + `write(...)` (for a `transformers` forward): a `DynamicCache` holding a
      copy of the rows' columns (the model concatenates the block to it), whose new columns
      `write` puts back.

    Capacity doubles when full, so appending costs the new columns. Columns never written are
    zeros: a masked column must hold finite numbers, since attention weighs it by exactly 0.
    """

    def __init__(self, config: Any, batch: int) -> None:
        self.config, self.batch = config, batch
        self.buffers: list[list[torch.Tensor]] = []  # per layer [keys, values]

    def lean(self, rows: torch.Tensor | None, width: int) -> _StoreCache:
        """The cache a lean forward of `rows` (None: all rows) runs on, `width` columns held."""
        return _StoreCache(self, rows, width)

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
        for i, layer in enumerate(cache.layers):
            self.put(i, rows, width, layer.keys[:, :, -new:], layer.values[:, :, -new:])

    def put(self, layer: int, rows: torch.Tensor | None, width: int, keys, values) -> list:
        """Write one layer's new columns (`[len(rows), heads, m, dim]`) at `width...`; return
        that layer's buffers."""
        end = width + keys.shape[2]
        if layer == len(self.buffers):
            self.buffers.append([self._alloc(t, end) for t in (keys, values)])
        pair = self.buffers[layer]
        for j, new in enumerate((keys, values)):
            if end > pair[j].shape[2]:
                grown = self._alloc(pair[j], 2 * end)
                grown[:, :, :width] = pair[j][:, :, :width]
                pair[j] = grown
            if rows is None:
                pair[j][:, :, width:end] = new
            else:
                pair[j][rows, :, width:end] = new
        return pair

    def compact(self, index: torch.Tensor, width: int) -> None:
        """Keep, per row, the columns `index[row]` (`[batch, n]`) of `[0, width)`, in place
        (the columns after them keep finite old values, masked until overwritten)."""
        for pair in self.buffers:
            for t in pair:
                cols = index[:, None, :, None].expand(t.shape[0], t.shape[1], -1, t.shape[3])
                t[:, :, : index.shape[1]] = t[:, :, :width].gather(2, cols)

    def _alloc(self, like: torch.Tensor, capacity: int) -> torch.Tensor:
        return like.new_zeros((self.batch, like.shape[1], max(capacity, 64), like.shape[3]))


class _StoreCache:
    """`update(keys, values, layer)` for `LeanForward` on a `KVStore` (see `KVStore.lean`)."""

    def __init__(self, store: KVStore, rows: torch.Tensor | None, width: int) -> None:
        self.store, self.rows, self.width = store, rows, width

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int):
        pair = self.store.put(layer, self.rows, self.width, keys, values)
        end = self.width + keys.shape[2]
        if self.rows is None:
            return pair[0][:, :, :end], pair[1][:, :, :end]
        return (
            pair[0][:, :, :end].index_select(0, self.rows),
            pair[1][:, :, :end].index_select(0, self.rows),
        )
