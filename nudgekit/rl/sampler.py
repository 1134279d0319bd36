"""`PromptSampler`: a seeded, resumable order over the training problems.

Epoch `e` is a permutation drawn from `random.Random(f"{seed}-{e}")`, so the order depends only on
(seed, epoch) and the position `(epoch, index)` is the whole state: a checkpoint stores two ints
and a resumed run sees exactly the batches an uninterrupted one would. A batch that crosses an
epoch boundary takes the rest of the epoch and continues with the next permutation; the position
is normalised so that "end of epoch e" and "start of epoch e+1" are the same state.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class PromptSampler(Generic[T]):
    """Yield fixed-size batches of items forever, epoch after epoch.

    Args:
        items: the dataset (non-empty).
        batch_size: items per batch.
        seed: order seed.
        shuffle: permute every epoch (False keeps the given order).
        start_epoch: the first epoch's number (a sampler that takes over from another, e.g.
            NuRL's stage 2 over the filtered problems, continues its epoch count instead of
            repeating epoch 0's permutation seed).
    """

    def __init__(
        self,
        items: Sequence[T],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        start_epoch: int = 0,
    ) -> None:
        if not items:
            raise ValueError("PromptSampler: no items")
        if batch_size < 1:
            raise ValueError(f"PromptSampler: batch_size must be >= 1, got {batch_size}")
        self.items, self.batch_size, self.seed, self.shuffle = (
            list(items),
            batch_size,
            seed,
            shuffle,
        )
        if start_epoch < 0:
            raise ValueError(f"PromptSampler: start_epoch must be >= 0, got {start_epoch}")
        self.epoch, self.index = start_epoch, 0
        self._order = self._permutation(start_epoch)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.items)))
        if self.shuffle:
            random.Random(f"{self.seed}-{epoch}").shuffle(order)
        return order

    def _advance_epoch(self) -> None:
        self.epoch, self.index = self.epoch + 1, 0
        self._order = self._permutation(self.epoch)

    def next_batch(self) -> list[T]:
        """The next `batch_size` items (crossing into the next epoch when needed)."""
        out: list[T] = []
        while len(out) < self.batch_size:
            take = min(self.batch_size - len(out), len(self.items) - self.index)
            out.extend(self.items[i] for i in self._order[self.index : self.index + take])
            self.index += take
            if self.index >= len(self.items):
                self._advance_epoch()
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "size": len(self.items)}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("size", len(self.items))) != len(self.items):
            raise ValueError(
                f"PromptSampler: checkpoint was taken over {state['size']} items, "
                f"this run has {len(self.items)}"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)
        if self.index >= len(self.items):
            self._advance_epoch()
