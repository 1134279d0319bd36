"""`RowCache`: one model's batched KV cache in which every row keeps its own token sequence.

Nudging moves each question's text forward by different amounts in each model (a draft is
thrown away in one row, a base completion runs on in another), so rows cannot share a length.
Two layouts implement this interface (`row_cache` picks one): `ragged.RaggedRowCache` (a row's
token at position p lives in column p) and `slots.SlotsRowCache` (a forward appends a block of
columns to every row, with holes). In both:

- **Sync, not append.** A caller asks for a row to hold `target` ids; the row keeps the longest
  common prefix of what it holds and `target` (cache rollback: the rest of its tokens are
  dropped, or in the slots layout become holes), then feeds the difference. Re-tokenising
  shared text therefore costs only the tokens that changed.
- **Right-aligned blocks.** Within a forward's block of input ids each row's new tokens come
  last, so the last block column always carries every feeding row's next-token logits.
- **Positions are logical**: a token's position id is its index in the row's sequence, so holes
  (slots layout) are invisible to the model (rotary embeddings see a contiguous sequence).
- **Only the feeding rows run.** A forward gathers the caches of the rows that feed (or, when
  few rows would be left out of a short block, runs the whole batch), runs the model on them and
  stores their new columns; the other rows are left alone (slots layout: their block is a
  hole they never computed). Rows whose feeds differ a lot in length (a new question's prompt
  next to one-token decode steps) run as separate forwards when padding would cost more than a
  forward (`forward_cost`).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nudgekit.inference.kvstore import KVStore
from nudgekit.inference.rows import common_prefix, plan_groups

# A forward's fixed cost in row-tokens for splitting feeds (`rows.plan_groups`): the best measured
# on the tiny world on a CPU (experiments/bench/README.md)
FORWARD_COST = 128.0


@dataclass
class SyncRequest:
    """Bring `row` to hold `target` and return logits for predicting `target[L]` for each L.

    `wanted` lists sequence lengths L (1 <= L <= len(target)); logits after the whole target
    (L = len(target)) are always returned.
    """

    row: int
    target: list[int]
    wanted: Sequence[int] = ()


class RowCache(ABC):
    """A model plus a per-row KV cache (see the module docstring); a layout implements `_run`
    (one forward over a block) and what a rollback and a feed do to its columns.

    Attributes:
        ids: per row, the token ids it holds.
        store: the per-layer buffers of every row (`kvstore.KVStore`), or None where the
            model's own growing cache holds the rows.
        lean: the `lean.LeanForward` the model runs through, or None (its own forward).
        forwards, fed: forward passes run and tokens fed (for benchmarks).
    """

    def __init__(
        self,
        model: Any,
        batch: int,
        pad_id: int,
        forward_cost: float,
        lean: Any,
        store: KVStore | None,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.ids: list[list[int]] = [[] for _ in range(batch)]
        self.end_logits: torch.Tensor | None = None  # [batch, V] logits after ids[r]
        self.end_valid = [False] * batch
        self.pad_id = pad_id
        self.forward_cost = forward_cost
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" in params
        self.lean = lean
        self.store = store
        self.forwards = 0
        self.fed = 0

    @abstractmethod
    def _run(self, rows: list[int], ids, block_mask, pos, keep: int, whole: bool) -> torch.Tensor:
        """One forward of the block `ids` `[len(rows), m]` over `rows`; the last `keep` block
        columns' logits."""

    @abstractmethod
    def _drop(self, row: int, keep: int) -> None:
        """Forget the columns of `row`'s tokens from index `keep` on (before `ids` is cut)."""

    @abstractmethod
    def _booked(self, offsets: list[tuple[int, int]], m: int) -> None:
        """The last forward's tokens are booked: `(row, pad columns before its tokens)` per fed
        row of the block of `m` columns."""

    @torch.inference_mode()
    def sync(self, requests: Sequence[SyncRequest]) -> list[dict[int, torch.Tensor]]:
        """Serve `requests` (distinct rows): one forward pass per group of feeding rows.

        Returns:
            Per request, `{L: logits [V]}` for every wanted L and for `len(target)`.
        """
        feeds: dict[int, int] = {}  # row -> index of its first fed token
        for req in requests:
            start = self._plan(req)
            if start is not None:
                feeds[req.row] = start
        by_row = {req.row: req for req in requests}
        block: dict[int, dict[int, torch.Tensor]] = {}
        for feeding, rows in self._groups({r: len(by_row[r].target) - s for r, s in feeds.items()}):
            block.update(self._forward(by_row, {r: feeds[r] for r in feeding}, rows))
        out = []
        for req in requests:
            got: dict[int, torch.Tensor] = {}
            n = len(req.target)
            for length in {*req.wanted, n}:
                if req.row in feeds:
                    got[length] = block[req.row][length]
                else:  # nothing fed: only the stored end logits can be asked for
                    got[length] = self.end_logits[req.row]  # type: ignore[index]
            out.append(got)
        return out

    def _plan(self, req: SyncRequest) -> int | None:
        """Roll the row back to what `req` can reuse; the index to feed from (None: no feed)."""
        r, target = req.row, req.target
        keep = common_prefix(self.ids[r], target)
        if req.wanted:
            keep = min(keep, min(req.wanted) - 1)
        if keep == len(target) == len(self.ids[r]) and self.end_valid[r]:
            return None
        keep = min(keep, len(target) - 1)
        if keep < len(self.ids[r]):
            self._drop(r, keep)
            del self.ids[r][keep:]
            self.end_valid[r] = False
        return keep

    def _groups(self, lengths: dict[int, int]) -> list[tuple[list[int], list[int]]]:
        """The forward passes for rows feeding `lengths` tokens, as `(rows that feed, rows the
        forward runs over)`: the feeding rows split by `rows.plan_groups`, each group over just
        its rows; a cache whose rows cannot be moved runs over the whole batch.

        A group that leaves out few rows of a short block runs over the whole batch instead (the
        rows left out feed a hole): padding `(batch - n) * m` row-tokens, no more than one per
        feeding row, costs less than gathering the group's caches out of the store.
        """
        if not lengths:
            return []
        everyone = list(range(len(self.ids)))
        if self.store is None:
            return [(sorted(lengths), everyone)]
        out = []
        for group in plan_groups(lengths, self.forward_cost):
            short = (len(everyone) - len(group)) * max(lengths[r] for r in group) <= len(group)
            out.append((group, everyone if short else group))
        return out

    def _forward(self, by_row, feeds: dict[int, int], rows: list[int]):
        """One forward over `rows` (sorted; all rows: the cache in place, no gather); rows not
        in `feeds` feed nothing. Returns `{row: {L: logits}}`."""
        new = {r: by_row[r].target[feeds[r] :] for r in rows if r in feeds}
        wanted = {r: [L for L in {*by_row[r].wanted, len(by_row[r].target)} if L > feeds[r]]
                  for r in new}  # fmt: skip
        ids, block_mask, pos, keep = self._block(rows, new, feeds, wanted)
        logits = self._run(rows, ids, block_mask, pos, keep, len(rows) == len(self.ids))
        return self._record(rows, new, feeds, wanted, logits)

    def _block(self, rows, new, feeds, wanted):
        """Input ids, block mask and positions `[len(rows), m]` (right-aligned feeds), and how
        many last columns' logits are needed."""
        m = max(len(v) for v in new.values())
        ids, block_mask, pos = [], [], []
        first_col = m  # leftmost block column whose logits some row needs
        for r in rows:
            if r not in new:
                ids.append([self.pad_id] * m)
                block_mask.append([0] * m)
                pos.append([len(self.ids[r])] * m)  # masked; any position will do
                continue
            toks, start = new[r], feeds[r]
            off = m - len(toks)
            ids.append([self.pad_id] * off + list(toks))
            block_mask.append([0] * off + [1] * len(toks))
            pos.append([start] * off + list(range(start, start + len(toks))))
            first_col = min(first_col, off + min(wanted[r]) - 1 - start)
        ids, block_mask, pos = (torch.tensor(x, dtype=torch.long) for x in (ids, block_mask, pos))
        return ids, block_mask, pos, m - first_col

    def _record(self, rows, new, feeds, wanted, logits):
        """Book the fed tokens; the asked-for logits per row; keep the end logits."""
        m = max(len(v) for v in new.values())
        base_col = m - logits.shape[1]  # block column of logits[:, 0]
        out: dict[int, dict[int, torch.Tensor]] = {}
        fed, at, offsets = [], [], []
        for i, r in enumerate(rows):
            if r not in new:
                continue
            toks, start = new[r], feeds[r]
            off = m - len(toks)
            self.ids[r].extend(toks)
            self.fed += len(toks)
            offsets.append((r, off))
            out[r] = {L: logits[i, off + L - 1 - start - base_col] for L in wanted[r]}
            self.end_valid[r] = True
            fed.append(r)
            at.append(i)
        if self.end_logits is None:
            self.end_logits = logits.new_zeros((len(self.ids), logits.shape[-1]))
        self.end_logits[torch.tensor(fed, device=self.device)] = logits[at, -1]
        self._booked(offsets, m)
        return out
