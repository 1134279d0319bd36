"""Fast inference on resident `transformers` models: the pieces the `hf` engine and the cached
nudging decoder share.

- `lean.LeanForward`: the Llama/Qwen2 forward as plain tensor ops (same logits);
- `kvstore`: per-layer key/value buffers written in place (`KVStore` for rows of their own
  lengths, `AppendCache` for the engine's prefill + decode);
- `RowCache` (`rowcache`): a batched cache whose rows each hold their own token sequence, in two
  layouts, `RaggedRowCache` and `SlotsRowCache`; `row_cache` picks the layout for a model;
- `windows.LayerWindows`: sliding-window masks that count positions; `rows`: which rows share a
  forward, and what a row can keep.
"""

from __future__ import annotations

from typing import Any

from nudgekit.inference.lean import LeanForward
from nudgekit.inference.ragged import RaggedRowCache
from nudgekit.inference.rowcache import FORWARD_COST, RowCache, SyncRequest
from nudgekit.inference.rows import can_split
from nudgekit.inference.slots import SlotsRowCache
from nudgekit.inference.windows import LayerWindows

__all__ = [
    "FORWARD_COST",
    "LeanForward",
    "RaggedRowCache",
    "RowCache",
    "SlotsRowCache",
    "SyncRequest",
    "row_cache",
]


def row_cache(
    model: Any,
    batch: int,
    pad_id: int,
    compact_ratio: float = 1.25,
    compact_slack: int = 16,
    forward_cost: float = FORWARD_COST,
    lean: bool = True,
) -> RowCache:
    """A `RowCache` of `batch` rows over `model`, in the layout that serves it.

    Ragged (`RaggedRowCache`) for models run through `LeanForward` at batch > 1 and for every
    model with sliding-window layers; slots (`SlotsRowCache`) otherwise: a `transformers`
    forward over full attention, or one row, which keeps the model's own growing cache.

    Args:
        model: a `transformers` causal LM (eval mode).
        batch: number of rows.
        pad_id: any valid token id (padded columns are masked out).
        compact_ratio, compact_slack: (slots layout) compaction threshold.
        forward_cost: a forward pass's fixed cost in row-tokens, which decides whether the
            feeding rows are split into several forwards by feed length (`rows.plan_groups`);
            `math.inf`: one forward over all feeding rows.
        lean: run supported models (Llama, Qwen2) through `LeanForward`; others (Gemma-2/3,
            OLMo-2, ...) always use their own forward.
    """
    forward = LeanForward(model) if lean and LeanForward.supports(model) else None
    windows = LayerWindows(model)  # refuses attention the ready masks cannot express
    # one row has nothing to gather: it keeps the model's own growing cache; a lean forward
    # writes the rows of a store at their own positions (no holes), and so does a model with
    # sliding-window layers, whatever the batch (its own cache would drop columns)
    split = batch > 1 and can_split(model.config)
    if windows.sliding or (split and forward is not None):
        return RaggedRowCache(model, batch, pad_id, forward_cost, forward, windows)
    return SlotsRowCache(
        model, batch, pad_id, forward_cost, forward, split, compact_ratio, compact_slack
    )
