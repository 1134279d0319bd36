"""`RowCache`: one model's batched KV cache in which every row keeps its own token sequence.

Nudging moves each question's text forward by different amounts in each model (a draft is
thrown away in one row, a base completion runs on in another), so rows cannot share a length.
Two layouts of the per-layer key/value buffers (`models.kvstore.KVStore`):

- **Ragged** (models run through `models.lean.LeanForward` at batch > 1, and every model with
  sliding-window layers, through its own forward, `windows`): a row's token at
  position p lives in column p of its row, so a row holds exactly its own tokens, a rollback
  only shortens it, and a forward writes each row's new tokens at their own columns and hands
  attention a ready 4-D mask (query at position p sees columns 0..p). No holes, no compaction,
  and a forward reads only as many columns as its longest row: 0.77x the decode time of the
  layout below at batch 64, 0.87x at batch 16 (experiments/bench/README.md).
- **Slots** (a `transformers` forward, or one row): each row's cache is a set of *slots*
  marked valid in a 2-D attention mask; a forward appends one block of columns to every row:

    columns  | prompt r0 ......... | hole | draft r0 | <- block t: r0 feeds 3 tokens
             | prompt r1 ...... | draft r1 ... | pad | <- r1 feeds nothing: its block is a hole

In both layouts:

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
- **Compaction** (slots layout): when holes make the cache more than 1.25x as wide as the
  longest row (+ 16 columns), valid slots are gathered to the right and the holes dropped.

Sliding-window layers (Gemma-2, Gemma-3) keep every column too (a rollback may need any of
them) and see their window through the ready masks of `windows.LayerWindows`, which count
positions, never columns; the slots layout only serves full-attention models, whose masks the
`transformers` forward builds from the 2-D one.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nudgekit.models.kvstore import KVStore
from nudgekit.nudging.rows import can_split, plan_groups
from nudgekit.nudging.text import common_prefix

# A forward's fixed cost in row-tokens for splitting feeds (`rows.plan_groups`): measured best of
# 32-256 on the tiny world, CPU (256 questions at batch 64: 0.66x the time of one forward per tick)
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


class RowCache:
    """A model plus a per-row KV cache (see the module docstring).

    Args:
        model: a `transformers` causal LM (eval mode).
        batch: number of rows.
        pad_id: any valid token id (padded columns are masked out).
        compact_ratio, compact_slack: (slots layout) the cache is compacted once it is wider than
            `compact_ratio` x the longest row + `compact_slack` columns. Attention reads every
            column of every row, so the defaults keep the holes few: with continuous batching
            (rows at different stages, a finished question's slots left as holes) 1.25x + 16
            decodes 0.84x as long as 2x + 64 (A/B at batch 16 and 64; same outputs).
        forward_cost: a forward pass's fixed cost in row-tokens, which decides whether the
            feeding rows are split into several forwards by feed length (`rows.plan_groups`):
            a long feed (a new question's prompt, a draft to probe) then no longer pads every
            decoding row to its length; `math.inf`: one forward over all feeding rows. The
            default (`FORWARD_COST`) is the best measured on the tiny world on a CPU
            (experiments/bench/README.md); a GPU forward's fixed cost is larger.
        lean: run supported models (Llama, Qwen2) through `models.lean.LeanForward`, the same
            maths without the `transformers` module overhead; others (Gemma-2/3, OLMo-2, ...)
            always use their own forward.
    """

    def __init__(
        self,
        model: Any,
        batch: int,
        pad_id: int,
        compact_ratio: float = 1.25,
        compact_slack: int = 16,
        forward_cost: float = FORWARD_COST,
        lean: bool = True,
    ) -> None:
        from transformers import DynamicCache

        from nudgekit.models.lean import LeanForward
        from nudgekit.nudging.windows import LayerWindows

        self.model = model
        self.device = next(model.parameters()).device
        self.cache = DynamicCache(config=model.config)
        self.mask = torch.zeros((batch, 0), dtype=torch.long, device=self.device)
        self.ids: list[list[int]] = [[] for _ in range(batch)]
        self.slots: list[list[int]] = [[] for _ in range(batch)]
        self.end_logits: torch.Tensor | None = None  # [batch, V] logits after ids[r]
        self.end_valid = [False] * batch
        self.pad_id = pad_id
        self.compact_ratio, self.compact_slack = compact_ratio, compact_slack
        self.forward_cost = forward_cost
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" in params
        self.lean = LeanForward(model) if lean and LeanForward.supports(model) else None
        self.windows = LayerWindows(model)
        sliding = self.windows.sliding
        # one row has nothing to gather: it keeps the model's own growing cache; a lean forward
        # writes the rows of a store at their own positions (no holes), and so does a model with
        # sliding-window layers, whatever the batch (its own cache would drop columns)
        split = batch > 1 and can_split(model.config)
        self.store = KVStore(model.config, batch) if split or sliding else None
        self.ragged = self.store is not None and (self.lean is not None or sliding)
        self.forwards = 0  # forward passes run (for benchmarks)
        self.fed = 0  # tokens fed (for benchmarks)

    @property
    def width(self) -> int:
        return self.mask.shape[1]

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
            dropped = self.slots[r][keep:]
            if dropped:
                self.mask[r, dropped] = 0
            del self.slots[r][keep:], self.ids[r][keep:]
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
        in `feeds` feed nothing (their block is a hole). Returns `{row: {L: logits}}`."""
        batch, width = len(self.ids), self.width
        whole = len(rows) == batch
        new = {r: by_row[r].target[feeds[r] :] for r in rows if r in feeds}
        wanted = {r: [L for L in {*by_row[r].wanted, len(by_row[r].target)} if L > feeds[r]]
                  for r in new}  # fmt: skip
        ids, block_mask, pos, keep = self._block(rows, new, feeds, wanted)
        if self.ragged:
            logits = self._forward_ragged(rows, ids, block_mask, pos, keep, whole)
            return self._record(rows, new, feeds, wanted, logits, width)
        index = torch.tensor(rows, device=self.device)
        full_block = torch.zeros((batch, ids.shape[1]), dtype=torch.long, device=self.device)
        full_block[index] = block_mask.to(self.device)
        self.mask = torch.cat([self.mask, full_block], dim=1)
        sub = None if whole else index
        mask = self.mask if whole else self.mask[index]
        ids, pos = ids.to(self.device), pos.to(self.device)
        if self.lean is not None:  # one row: the model's own growing cache (see `ragged`)
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
        return self._record(rows, new, feeds, wanted, logits, width)

    def _forward_ragged(self, rows, ids, block_mask, pos, keep: int, whole: bool):
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

    def _record(self, rows, new, feeds, wanted, logits, width: int):
        """Book the fed tokens and slots; the asked-for logits per row; keep the end logits."""
        m = max(len(v) for v in new.values())
        base_col = m - logits.shape[1]  # block column of logits[:, 0]
        out: dict[int, dict[int, torch.Tensor]] = {}
        fed, at = [], []
        for i, r in enumerate(rows):
            if r not in new:
                continue
            toks, start = new[r], feeds[r]
            off = m - len(toks)
            self.ids[r].extend(toks)
            self.fed += len(toks)
            if not self.ragged:
                self.slots[r].extend(range(width + off, width + m))
            out[r] = {L: logits[i, off + L - 1 - start - base_col] for L in wanted[r]}
            self.end_valid[r] = True
            fed.append(r)
            at.append(i)
        if self.end_logits is None:
            self.end_logits = logits.new_zeros((len(self.ids), logits.shape[-1]))
        self.end_logits[torch.tensor(fed, device=self.device)] = logits[at, -1]
        if not self.ragged:
            self._maybe_compact()
        return out

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
