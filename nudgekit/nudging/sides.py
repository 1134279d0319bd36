"""The two halves of the cached nudging decoder and what passes between them.

`Side` is one model with its tokenizer, per-row KV cache (`inference.RowCache`), prompts and
sampling; a question's program (`cached.py`) asks it for tokens through `SyncRequest`s and gets
`Pick`s back, and `RowState` is what the decoder keeps per running row. `LiveDraft` is a nudging
draft while it is being written, which the base reads as it grows.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch

from nudgekit.engines.sampling import derive_seed, sample_step
from nudgekit.inference import FORWARD_COST, SyncRequest, row_cache
from nudgekit.nudging.attribution import NudgeOutput
from nudgekit.nudging.rules import Chunk, Draft
from nudgekit.nudging.text import PieceStream, eos_ids, prompt_ids, start_ids


@dataclass(frozen=True)
class Pick:
    """The token chosen at one position (greedy or sampled) and the top-1 probability there."""

    token: int
    prob: float


class Side:
    """One model's half of the decoder: model, tokenizer, cache, prompts and sampling."""

    def __init__(
        self, lm: Any, batch: int, temperature: float, top_p: float, seed: int, lean: bool = True,
        forward_cost: float = FORWARD_COST,
    ):  # fmt: skip
        self.model, self.tok = lm.model, lm.tokenizer
        self.eos = eos_ids(self.model, self.tok)
        pad = self.tok.pad_token_id
        pad = int(pad if pad is not None else min(self.eos))
        self.cache = row_cache(self.model, batch, pad, forward_cost=forward_cost, lean=lean)
        self.prompts: list[str] = [""] * batch
        self.bos = start_ids(self.tok)  # the BOS its tokenizer puts before a prompt, if any
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.gens: list[torch.Generator | None] = [None] * batch

    def start(self, row: int, prompt: str, key: int) -> None:
        self.prompts[row] = prompt
        if self.temperature > 0:
            self.gens[row] = torch.Generator().manual_seed(derive_seed(self.seed, key))

    def encode(self, row: int, text: str) -> list[int]:
        """The ids of the row's prompt + `text` (the prompt's BOS, if any, once)."""
        return prompt_ids(self.tok, self.prompts[row] + text, self.bos)

    def serve(self, requests: list[SyncRequest]) -> list[dict[int, Pick]]:
        """One forward for `requests`, then a (batched) pick at every asked position."""
        logits = self.cache.sync(requests)
        keys = [(i, L) for i, got in enumerate(logits) for L in sorted(got)]
        stacked = torch.stack([logits[i][L] for i, L in keys]).float()
        n = len(keys)
        temp = torch.full((n,), self.temperature)
        top_p = torch.full((n,), self.top_p)
        uniforms = torch.zeros(n)
        if self.temperature > 0:
            for k, (i, _) in enumerate(keys):
                uniforms[k] = torch.rand((), generator=self.gens[requests[i].row])
        ids, _, _, top_lp = sample_step(stacked.cpu(), temp, top_p, uniforms)
        out: list[dict[int, Pick]] = [{} for _ in requests]
        for (i, L), tok, lp in zip(keys, ids.tolist(), top_lp.exp().tolist()):
            out[i][L] = Pick(tok, lp)
        return out


Request = tuple[Side, SyncRequest]
# A question's program yields the requests of one tick (at most one per model) and is sent back
# the picks for each, in order; its helpers each use one model and yield one request at a time.
Program = Generator[list[Request], list[dict[int, Pick]], NudgeOutput]
Single = Generator[Request, dict[int, Pick], Any]
WAIT = None  # what a base task yields while the draft has not yet written what it needs


@dataclass
class RowState:
    """A running question's decode state in its row: the requests of this tick and their picks
    so far (None: not answered yet)."""

    question: int
    program: Program
    wants: list[Request]
    picks: list[dict[int, Pick] | None]

    @property
    def answered(self) -> bool:
        """Every request of this tick has its picks: the program can move on."""
        return all(p is not None for p in self.picks)


class LiveDraft:
    """A nudging draft while it is being written: its tokens' texts so far, then the `Chunk`."""

    def __init__(self, side: Side, ids: list[int]) -> None:
        self.ids = ids
        self._stream = PieceStream(side.tok, ids)
        self.pieces: list[str] = []
        self.text = ""
        self.chunk: Chunk | None = None

    def add(self, token: int) -> None:
        self.pieces.append(self._stream.add(token))
        self.text += self.pieces[-1]

    @property
    def done(self) -> bool:
        return self.chunk is not None

    def words(self) -> tuple[Draft, Callable[[int], bool]]:
        """The draft so far cut into words, and whether word `j` can still grow."""
        words = Draft.parse(self.text)
        return words, lambda j: self.done or len(words.words) > j + 1
