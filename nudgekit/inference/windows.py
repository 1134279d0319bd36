"""Attention masks that `ragged.RaggedRowCache` hands a `transformers` forward.

In the ragged layout a row's token at position p lives in column p, so which columns a query
sees follows from positions alone: full-attention layers see columns `0..p`, sliding-window
layers (Gemma-2, Gemma-3, Qwen2/Mistral with `use_sliding_window`) the last `window` of them,
`p - window < c <= p`, the rule of `transformers.masking_utils.sliding_window_overlay`. The
model's own mask building cannot be used there: it counts columns of a cache whose rows hold
different lengths (and the slots layout's holes) against the window, and a sliding-window cache
layer drops the columns a rollback would need. So every layer keeps all its columns, and the
forward gets ready additive masks, one per layer kind (`{"full_attention": ...,
"sliding_attention": ...}`, which `transformers` models with mixed layers accept in place of a
2-D mask).

Only the `eager` and `sdpa` attention implementations take such masks; others are refused.
"""

from __future__ import annotations

from typing import Any

import torch

from nudgekit.errors import NudgekitError

KINDS = ("full_attention", "sliding_attention")
READY_MASK_ATTENTION = (None, "eager", "sdpa")


class LayerWindows:
    """How far back each kind of attention layer of `model` sees.

    Attributes:
        windows: `{layer kind: window in tokens, or None for full attention}`.
        per_kind: the forward takes a dict of masks by kind (the config lists `layer_types`);
            else one mask for every layer.
        sliding: some layer sees only a window.
    """

    def __init__(self, model: Any) -> None:
        cfg = model.config
        kinds = list(dict.fromkeys(getattr(cfg, "layer_types", None) or []))
        window = getattr(cfg, "sliding_window", None)
        self.per_kind = bool(kinds)
        if not kinds:  # no per-layer kinds: every layer slides when the config sets a window
            on = window is not None and getattr(cfg, "use_sliding_window", True) is not False
            kinds = ["sliding_attention" if on else "full_attention"]
        name = getattr(cfg, "model_type", "?")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise NudgekitError(
                f"nudging: {name} has {unknown} attention layers, which the cached decoder cannot "
                "mask (use decoder=chunked)"
            )
        if getattr(cfg, "use_bidirectional_attention", False):
            raise NudgekitError(f"nudging: {name} attends bidirectionally (use decoder=chunked)")
        self.windows = {k: window if k == "sliding_attention" else None for k in kinds}
        self.sliding = any(w is not None for w in self.windows.values())
        impl = getattr(cfg, "_attn_implementation", None)
        if self.sliding and impl not in READY_MASK_ATTENTION:
            raise NudgekitError(
                f"nudging: {name} has sliding-window layers and attn_implementation={impl!r}; the "
                "cached decoder hands attention ready masks, which only 'sdpa' and 'eager' take"
            )
        self.dtype = next(model.parameters()).dtype

    def masks(self, real: torch.Tensor, pos: torch.Tensor, width: int, device: Any) -> Any:
        """Additive masks `[b, 1, m, width]` for block slots `real` (`[b, m]` booleans) at
        positions `pos`: a real slot at position p sees the columns its layer kind allows, a
        padded slot sees column 0 only (its output is never read). A dict by kind, or one mask.
        """
        columns = torch.arange(width)
        p = pos[:, :, None]
        out = {}
        for kind, window in self.windows.items():
            sees = columns <= p
            if window is not None:
                sees &= columns > p - window
            seen = torch.where(real[:, :, None], sees, columns == 0)
            mask = torch.zeros(seen.shape, dtype=self.dtype)
            mask.masked_fill_(~seen, torch.finfo(self.dtype).min)
            out[kind] = mask[:, None].to(device)
        return out if self.per_kind else out[next(iter(self.windows))]
