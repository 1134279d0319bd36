"""`RaggedRowCache`: rows written at their own positions (a `RowCache` layout).

A row's token at position p lives in column p of its row of a `kvstore.KVStore`, so a row holds
exactly its own tokens, a rollback only shortens it, and a forward writes each row's new tokens
at their own columns and hands attention a ready 4-D mask (query at position p sees columns
0..p). No holes, no compaction, and a forward reads only as many columns as its longest row.
It serves models run through `lean.LeanForward` at batch > 1, and every model with
sliding-window layers (through its own forward, masks from `windows.LayerWindows`, which count
positions, never columns: such layers keep every column, since a rollback may need any of them).
"""

from __future__ import annotations

from typing import Any

import torch

from nudgekit.inference.kvstore import KVStore
from nudgekit.inference.rowcache import RowCache
from nudgekit.inference.windows import LayerWindows


class RaggedRowCache(RowCache):
    """A `RowCache` whose rows hold their tokens at their positions' columns of `store`.

    Args:
        model: a `transformers` causal LM (eval mode).
        batch: number of rows.
        pad_id: any valid token id (padded slots are masked out).
        forward_cost: a forward pass's fixed cost in row-tokens (`rows.plan_groups`).
        lean: the model's `LeanForward`, or None to run its own forward with `windows`' masks.
        windows: the model's `LayerWindows`.
    """

    def __init__(
        self, model: Any, batch: int, pad_id: int, forward_cost: float, lean: Any,
        windows: LayerWindows,
    ) -> None:  # fmt: skip
        super().__init__(model, batch, pad_id, forward_cost, lean, KVStore(model.config, batch))
        self.windows = windows

    def _drop(self, row: int, keep: int) -> None:
        """Nothing to free: the row's next feed overwrites the columns from `keep` on."""

    def _booked(self, offsets: list[tuple[int, int]], m: int) -> None:
        """Nothing to book: a row's tokens sit at their positions' columns."""

    def _run(self, rows, ids, block_mask, pos, keep: int, whole: bool):
        """A forward with each row's tokens at their positions' columns: a block slot at
        position p is written to column p and sees columns `0..p` (a sliding-window layer: the
        last `window` of them); a padded slot is written just past its row's last token
        (overwritten by the row's next feed) and sees column 0."""
        real = block_mask.bool()
        width = int(pos[real].max()) + 1  # columns attention reads: every fed row's end
        ends = torch.tensor([len(self.ids[r]) for r in rows])[:, None]  # before this feed
        ends = torch.maximum(ends, torch.where(real, pos + 1, 0).amax(1, keepdim=True))
        cols = torch.where(real, pos, ends)
        sub = None if whole else torch.tensor(rows, device=self.device)
        need = max(width, int(ends.max())) + 1
        cache = self.store.scatter(sub, cols.to(self.device), width, need)  # type: ignore[union-attr]
        ids, dev_pos = ids.to(self.device), pos.to(self.device)
        self.forwards += 1
        if self.lean is not None:
            columns = torch.arange(width)
            seen = torch.where(real[:, :, None], columns <= pos[:, :, None], columns == 0)
            return self.lean(ids, seen[:, None].to(self.device), dev_pos, cache, keep)
        masks = self.windows.masks(real, pos, width, self.device)
        kwargs = {self._cache_kw: cache, **({"logits_to_keep": keep} if self._keep_kw else {})}
        out = self.model(
            input_ids=ids, attention_mask=masks, position_ids=dev_pos, use_cache=True, **kwargs
        )
        return out.logits
