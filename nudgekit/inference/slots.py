"""`SlotsRowCache`: rows as slots of a shared block of columns (a `RowCache` layout).

Each row's cache is a set of *slots* marked valid in a 2-D attention mask; a forward appends one
block of columns to every row:

    columns  | prompt r0 ......... | hole | draft r0 | <- block t: r0 feeds 3 tokens
             | prompt r1 ...... | draft r1 ... | pad | <- r1 feeds nothing: its block is a hole

A rollback turns the dropped slots into holes. When holes make the cache more than
`compact_ratio` x as wide as the longest row (+ `compact_slack` columns), valid slots are
gathered to the right and the holes dropped. It serves full-attention models run through their
`transformers` forward (whose masks are built from the 2-D one), and one row, which keeps the
model's own growing cache (through `lean.LeanForward` where supported).
"""

from __future__ import annotations

from typing import Any

import torch

from nudgekit.inference.kvstore import KVStore
from nudgekit.inference.rowcache import RowCache


class SlotsRowCache(RowCache):
    """A `RowCache` of slots in a 2-D mask over the model's own cache or a `KVStore`.

    Args:
        model: a `transformers` causal LM (eval mode).
        batch: number of rows.
        pad_id: any valid token id (padded columns are masked out).
        forward_cost: a forward pass's fixed cost in row-tokens (`rows.plan_groups`).
        lean: the model's `LeanForward` (one row only), or None.
        split: hold the rows in a `KVStore`, so a forward can run on a subset of them (else the
            model's own `DynamicCache`, and every forward runs on all rows).
        compact_ratio, compact_slack: the cache is compacted once it is wider than
            `compact_ratio` x the longest row + `compact_slack` columns (attention reads every
            column of every row, so the defaults keep the holes few).
    """

    def __init__(
        self, model: Any, batch: int, pad_id: int, forward_cost: float, lean: Any, split: bool,
        compact_ratio: float = 1.25, compact_slack: int = 16,
    ) -> None:  # fmt: skip
        from transformers import DynamicCache

        store = KVStore(model.config, batch) if split else None
        super().__init__(model, batch, pad_id, forward_cost, lean, store)
        self.cache = DynamicCache(config=model.config)
        self.mask = torch.zeros((batch, 0), dtype=torch.long, device=self.device)
        self.slots: list[list[int]] = [[] for _ in range(batch)]
        self.compact_ratio, self.compact_slack = compact_ratio, compact_slack
        self._block_at = 0  # the first column of the last forward's block

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def _drop(self, row: int, keep: int) -> None:
        dropped = self.slots[row][keep:]
        if dropped:
            self.mask[row, dropped] = 0
        del self.slots[row][keep:]

    def _booked(self, offsets: list[tuple[int, int]], m: int) -> None:
        for row, off in offsets:
            self.slots[row].extend(range(self._block_at + off, self._block_at + m))
        self._maybe_compact()

    def _run(self, rows, ids, block_mask, pos, keep: int, whole: bool):
        """Append the block to every row's columns (a hole for rows outside `rows`) and run the
        model over `rows` on their columns."""
        batch, width = len(self.ids), self.width
        self._block_at = width
        index = torch.tensor(rows, device=self.device)
        full_block = torch.zeros((batch, ids.shape[1]), dtype=torch.long, device=self.device)
        full_block[index] = block_mask.to(self.device)
        self.mask = torch.cat([self.mask, full_block], dim=1)
        sub = None if whole else index
        mask = self.mask if whole else self.mask[index]
        ids, pos = ids.to(self.device), pos.to(self.device)
        if self.lean is not None:  # one row: the model's own growing cache
            logits = self.lean(ids, mask, pos, self.cache, keep)
        else:
            cache = self.cache if self.store is None else self.store.view(sub, width)
            kwargs = {self._cache_kw: cache}
            if self._keep_kw:
                kwargs["logits_to_keep"] = keep
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **kwargs
            ).logits
            if self.store is not None:
                self.store.write(cache, sub, width, ids.shape[1])
        self.forwards += 1
        return logits

    def _maybe_compact(self) -> None:
        longest = max(len(s) for s in self.slots)
        if self.width <= self.compact_ratio * longest + self.compact_slack:
            return
        batch = len(self.slots)
        index = torch.zeros((batch, longest), dtype=torch.long)
        mask = torch.zeros((batch, longest), dtype=torch.long)
        for r, slots in enumerate(self.slots):
            if slots:
                index[r, longest - len(slots) :] = torch.tensor(slots)
                mask[r, longest - len(slots) :] = 1
            self.slots[r] = list(range(longest - len(slots), longest))
        index = index.to(self.device)
        if self.store is not None:
            self.store.compact(index, self.width)
            self.mask = mask.to(self.device)
            return
        for layer in self.cache.layers:
            for name in ("keys", "values"):
                t = getattr(layer, name)
                if t is None or t.numel() == 0:
                    continue
                gather = index[:, None, :, None].expand(t.shape[0], t.shape[1], longest, t.shape[3])
                setattr(layer, name, t.gather(2, gather))
        self.mask = mask.to(self.device)
