"""Per-layer key/value buffers written in place, for `lean.LeanForward`.

`transformers`' `DynamicCache` appends a forward's new keys/values by concatenation, which copies
every row's whole cache on every decode step. Here each layer's keys and values live in buffers
`[batch, heads, capacity, dim]`; a forward writes its new columns into them and attention reads
views of the columns held so far. Capacity doubles when full, so appending costs the new columns.

- `KVStore`: rows that each hold their own sequence (`rowcache.RowCache`: a forward may run on
  a subset of rows, gathered out of the store, and each row may write at its own columns);
- `AppendCache`: every row appends one block per forward (the `hf` engine's prefill + decode),
  with the two methods of `DynamicCache` the engine uses (`update`, `batch_select_indices`).
"""

from __future__ import annotations

from typing import Any

import torch


class KVStore:
    """Every row's keys and values, per layer, in buffers `[batch, heads, capacity, dim]`.

    Two ways to run a forward on it:

    - `scatter(rows, cols, width, need)` (for `lean.LeanForward` with a ready 4-D mask):
      a cache whose `update` writes each row's new keys/values straight into the buffers at
      its own columns (`cols`: a token's position, so rows of any lengths share the buffers with
      no holes between their tokens) and hands attention the rows' columns `[0, width)`: one
      gather per layer (none for the whole batch, which gets a view), nothing to concatenate;
    - `view(rows, width)` + `write(...)` (for a `transformers` forward): a `DynamicCache` holding a
      copy of the rows' columns (the model concatenates the block to it), whose new columns
      `write` puts back at columns `width...` of every row.

    Capacity doubles when full, so appending costs the new columns. Columns never written are
    zeros: a masked column must hold finite numbers, since attention weighs it by exactly 0.
    """

    def __init__(self, config: Any, batch: int) -> None:
        self.config, self.batch = config, batch
        self.buffers: list[list[torch.Tensor]] = []  # per layer [keys, values]

    def scatter(
        self, rows: torch.Tensor | None, cols: torch.Tensor, width: int, need: int
    ) -> _ScatterCache:
        """The cache a lean forward of `rows` (None: all rows) runs on when block slot `[i, j]`
        goes to column `cols[i, j]` (`< need`) and attention reads columns `[0, width)`."""
        return _ScatterCache(self, rows, cols, width, need)

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
        pair = self._reserve(layer, keys, values, end)
        for t, new in zip(pair, (keys, values)):
            if rows is None:
                t[:, :, width:end] = new
            else:
                t[rows, :, width:end] = new
        return pair

    def put_at(self, layer: int, rows: torch.Tensor | None, cols: torch.Tensor, keys, values,
               need: int) -> list:  # fmt: skip
        """Write one layer's block (`[len(rows), heads, m, dim]`), slot `[i, j]` at column
        `cols[i, j]`, growing the buffers to at least `need` columns; return them."""
        pair = self._reserve(layer, keys, values, need)
        if rows is None:
            rows = torch.arange(cols.shape[0], device=cols.device)
        index = rows[:, None].expand_as(cols)
        for t, new in zip(pair, (keys, values)):
            t[index, :, cols] = new.transpose(1, 2)
        return pair

    def _reserve(self, layer: int, keys, values, need: int) -> list:
        """The layer's `[keys, values]` buffers, allocated (like `keys`, `values`) or doubled so
        they hold at least `need` columns; growth keeps every column."""
        if layer == len(self.buffers):
            self.buffers.append([self._alloc(t, need) for t in (keys, values)])
        pair = self.buffers[layer]
        for j, t in enumerate(pair):
            if need > t.shape[2]:
                grown = self._alloc(t, 2 * need)
                grown[:, :, : t.shape[2]] = t
                pair[j] = grown
        return pair

    def compact(self, index: torch.Tensor, width: int) -> None:
        """Keep, per row, the columns `index[row]` (`[batch, n]`) of `[0, width)`, in place
        (the columns after them keep finite old values, masked until overwritten)."""
        for pair in self.buffers:
            for t in pair:
                cols = index[:, None, :, None].expand(t.shape[0], t.shape[1], -1, t.shape[3])
                t[:, :, : index.shape[1]] = t[:, :, :width].gather(2, cols)

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) the rows `rows`, in that order."""
        for pair in self.buffers:
            pair[:] = [t.index_select(0, rows) for t in pair]
        self.batch = len(rows)

    def _alloc(self, like: torch.Tensor, capacity: int) -> torch.Tensor:
        return like.new_zeros((self.batch, like.shape[1], max(capacity, 64), like.shape[3]))


class _ScatterCache:
    """`update(keys, values, layer)` for `LeanForward` (or a `transformers` forward, which then
    needs ready masks) on a `KVStore`, each slot written at its own column (`KVStore.scatter`)."""

    def __init__(self, store: KVStore, rows, cols: torch.Tensor, width: int, need: int) -> None:
        self.store, self.rows, self.cols, self.width, self.need = store, rows, cols, width, need

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int, **_: Any):
        """Write the block; return the layer's columns `[0, width)` of the rows (a
        `transformers` attention passes its cache kwargs too: nothing here needs them)."""
        pair = self.store.put_at(layer, self.rows, self.cols, keys, values, self.need)
        keys, values = pair[0][:, :, : self.width], pair[1][:, :, : self.width]
        if self.rows is None:
            return keys, values
        return keys.index_select(0, self.rows), values.index_select(0, self.rows)


class AppendCache:
    """A growing cache for `LeanForward` where every row gets the same columns each forward.

    `update(keys, values, layer)` writes the block at that layer's next free column and returns
    views of the layer's columns so far (no concatenation, no copy of the old columns);
    `batch_select_indices(rows)` keeps (or repeats) rows, e.g. to share a prefilled prompt
    across its samples or to drop finished rows.
    """

    def __init__(self, batch: int) -> None:
        self.store = KVStore(config=None, batch=batch)
        self.widths: list[int] = []  # columns held, per layer

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int):
        if layer == len(self.widths):
            self.widths.append(0)
        width = self.widths[layer]
        pair = self.store.put(layer, None, width, keys, values)
        self.widths[layer] = end = width + keys.shape[2]
        return pair[0][:, :, :end], pair[1][:, :, :end]

    def batch_select_indices(self, rows: torch.Tensor) -> None:
        self.store.select(rows)
