"""The in-process `hf` engine: batched sampling from a `transformers` causal LM on CPU or GPU.

How it departs from `model.generate(num_return_sequences=n)`:

- **Shared-prefix prefill.** Each distinct prompt of a micro-batch is prefilled once (left-padded,
  batched); its KV cache is then gathered `n` times along the batch axis and all rows decode
  together. GRPO's G samples per prompt thus cost one prefill instead of G.
- **A plain decode loop** (forward with the cache, attention mask and explicit position ids)
  instead of `generate`'s processor stack; rows that finish are dropped from the batch (and
  cache) once a quarter of the batch is done.
- **Per-row randomness.** Sample `j` of a request with seed `s` draws its uniforms from its own
  generator seeded with `derive_seed(s, j)`, and tokens come from inverse-CDF sampling.
- **Caller stops** (`generate(..., stop_when=...)`). A caller that needs a sample only up to a
  point it can recognise (the nudging decoders' base probes and chunks) is asked after every
  token and ends the sample there, so the steps it would throw away are never computed. A
  stopped sample is exactly the first tokens of the unstopped one when nothing else changes in
  its batch (one request: the same forwards, in the same order); in a batch, a stopped row
  leaves like a finished one.

Reproducibility guarantee: the same requests with the same seeds on the same machine, dtype and
`max_batch_size` give identical samples. A sample does not depend on the other requests in the
call *except* through floating-point rounding of its logits (batch shape and padding change the
matmul order), so across different batch compositions samples agree unless a draw lands within
rounding error of a CDF boundary, which with float32 on CPU we have not observed in tests.
A request with `seed=None` gets a seed drawn from torch's global RNG (so `torch.manual_seed`
still makes a run reproducible).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nudgekit.engines.base import GenerationRequest, GenerationResult, Sample
from nudgekit.engines.sampling import derive_seed, row_uniforms, sample_step
from nudgekit.engines.tokens import (
    decode_continuation,
    default_eos_ids,
    pad_id,
    request_prompt_ids,
    start_ids,
)
from nudgekit.errors import NudgekitError
from nudgekit.inference.kvstore import AppendCache

# (request index, first sample index, number of samples) of one micro-batch entry.
_Entry = tuple[int, int, int]
# `stop_when(request index, prompt ids, token ids so far, their top-1 log-probs)`: end the sample
StopWhen = Callable[[int, list[int], list[int], list[float]], bool]
_EOS, _STOP, _LENGTH = 1, 2, 3
_REASONS = {_EOS: "eos", _STOP: "stop", _LENGTH: "length"}


@dataclass
class _Rows:
    """Per-row outputs of one micro-batch, indexed by row (request/sample order)."""

    tokens: torch.Tensor  # [R, T] sampled ids
    logprobs: torch.Tensor  # [R, T]
    top_ids: torch.Tensor  # [R, T]
    top_logprobs: torch.Tensor  # [R, T]
    lengths: torch.Tensor  # [R] tokens sampled so far
    reasons: torch.Tensor  # [R] 0 while running, else _EOS / _STOP / _LENGTH

    @classmethod
    def empty(cls, n_rows: int, steps: int, device: torch.device) -> _Rows:
        def zeros(*shape, dtype):
            return torch.zeros(shape, dtype=dtype, device=device)

        return cls(
            *(zeros(n_rows, steps, dtype=dt) for dt in (torch.long, torch.float32) * 2),
            lengths=zeros(n_rows, dtype=torch.long),
            reasons=zeros(n_rows, dtype=torch.long),
        )


def plan_micro_batches(
    ns: Sequence[int], max_rows: int, order: Sequence[int] | None = None
) -> list[list[_Entry]]:
    """Pack requests into micro-batches of at most `max_rows` sample rows.

    Args:
        ns: samples per request.
        max_rows: micro-batch size in rows.
        order: the order to pack requests in (default: as given).

    A request with more samples than fit is split across micro-batches; each part keeps its
    sample indices, so its seeds (and samples) are the same as if it had fit.
    """
    batches: list[list[_Entry]] = [[]]
    free = max_rows
    for req in order if order is not None else range(len(ns)):
        n = ns[req]
        start = 0
        while start < n:
            if free == 0:
                batches.append([])
                free = max_rows
            take = min(free, n - start)
            batches[-1].append((req, start, take))
            start += take
            free -= take
    return [b for b in batches if b]


class HFEngine:
    """Sample from a `transformers` causal LM in-process.

    Args:
        model: a loaded `PreTrainedModel`, a `ModelSpec`, or a path / hub id / `zoo:` name.
        tokenizer: the model's tokenizer (loaded from the spec when `model` is not a module).
        max_batch_size: most sample rows decoded at once (bounds memory).
        progress: show a tqdm bar over micro-batches.
        eos_token_ids: ids that end a sample with `finish_reason="eos"`; default: the model's
            generation config plus the tokenizer's EOS.
        add_special_tokens: text prompts start with the tokenizer's BOS (if it adds one, e.g.
            Gemma's) unless a chat template already wrote it (`engines.tokens.prompt_ids`).
        share_prefix: prefill each distinct prompt once and share its KV cache across its `n`
            samples; off prefills every sample row separately, as `generate` does (kept for
            benchmarks and as a fallback; samples are the same either way up to rounding).
        lean: run an unwrapped Llama/Qwen2 model through `inference.lean.LeanForward` (the same
            logits without the `transformers` module overhead); a DDP/DeepSpeed-wrapped model
            and other architectures always run their own forward.
        bmm_decode_rows: with `lean`, a micro-batch of at least this many sample rows keeps its
            keys/values in place (`inference.kvstore.AppendCache`: no per-step concatenation) and
            its decode steps compute attention with batched matrix products
            (`inference.lean.decode_attention`) instead of `scaled_dot_product_attention`, which on
            a CPU is slower there; None: never. Fewer rows keep a `DynamicCache` and SDPA.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        max_batch_size: int = 64,
        progress: bool = False,
        eos_token_ids: Sequence[int] | None = None,
        add_special_tokens: bool = True,
        share_prefix: bool = True,
        lean: bool = True,
        bmm_decode_rows: int | None = 32,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            from nudgekit.models import ModelSpec

            model = ModelSpec(str(model))
        if hasattr(model, "load_model"):  # a ModelSpec
            tokenizer = tokenizer if tokenizer is not None else model.load_tokenizer()
            model = model.load_model()
        if tokenizer is None:
            raise NudgekitError("hf engine: a loaded model needs its tokenizer (tokenizer=...)")
        if max_batch_size < 1:
            raise NudgekitError(f"hf engine: max_batch_size must be >= 1, got {max_batch_size}")
        if bmm_decode_rows is not None and bmm_decode_rows < 1:
            raise NudgekitError(
                f"hf engine: bmm_decode_rows must be >= 1 or None, got {bmm_decode_rows}"
            )
        self.model = model
        # A DDP / DeepSpeed wrapper is called as is; config and signature come from its module.
        inner = getattr(model, "module", None)
        self._core = inner if isinstance(inner, torch.nn.Module) else model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.progress = progress
        self.add_special_tokens = add_special_tokens
        self._start = start_ids(tokenizer) if add_special_tokens else []
        self.share_prefix = share_prefix
        self.lean, self.bmm_decode_rows = lean, bmm_decode_rows
        self._lean = None  # the LeanForward of the current generate call, if any
        self.eos_token_ids = sorted(set(eos_token_ids or default_eos_ids(self._core, tokenizer)))
        self.pad_id = pad_id(tokenizer, self.eos_token_ids)
        self._anchor = list(tokenizer("a", add_special_tokens=False).input_ids)
        # transformers 5.x renamed `past_key_values` to `cache`; accept either version.
        params = inspect.signature(self._core.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self, requests: list[GenerationRequest], stop_when: StopWhen | None = None
    ) -> list[GenerationResult]:
        """Sample `request.n` completions for every request (see the module docstring).

        `stop_when(index, prompt_ids, token_ids, top_logprobs)` is called after every token
        that does not already end its sample (no EOS, stop string or exhausted budget), for
        each sample of request `index`, with the sample's tokens so far and the top-1 log-probs
        at their positions (kept whether or not the request asks for them); True ends the sample
        after that token with `finish_reason="stop"` (its text is not cut).
        """
        prompts = [self._prompt_ids(i, r) for i, r in enumerate(requests)]
        seeds = [
            r.seed if r.seed is not None else int(torch.randint(0, 2**62, ()).item())
            for r in requests
        ]
        samples: list[list[Sample | None]] = [[None] * r.n for r in requests]
        # Packing similar lengths together wastes less compute on left padding.
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        batches = plan_micro_batches([r.n for r in requests], self.max_batch_size, order)
        from tqdm.auto import tqdm

        was_training = self.model.training  # a trainer may hand in its policy mid-training
        self.model.eval()
        self._lean = self._lean_forward()
        try:
            for batch in tqdm(batches, desc="hf generate", disable=not self.progress):
                self._run_batch(batch, requests, prompts, seeds, samples, stop_when)
        finally:
            self.model.train(was_training)
        return [
            GenerationResult(prompt_ids=p, samples=list(s))  # type: ignore[arg-type]
            for p, s in zip(prompts, samples)
        ]

    def _lean_forward(self):
        from nudgekit.inference.lean import LeanForward

        plain = self.model is self._core  # a wrapper (ZeRO-3) may hold partitioned weights
        if self.lean and plain and LeanForward.supports(self._core):
            return LeanForward(self._core, bmm_decode_rows=self.bmm_decode_rows)
        return None

    def _forward(self, ids, mask, pos, cache) -> torch.Tensor:
        """Logits of the last position `[b, V]` (only that position's are computed)."""
        if self._lean is not None:
            return self._lean(ids, mask, pos, cache, 1)[:, -1, :]
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            **{self._cache_kw: cache},
            **self._last_logits_only,
        )
        return out.logits[:, -1, :]

    def _prompt_ids(self, index: int, req: GenerationRequest) -> list[int]:
        vocab = self._core.get_input_embeddings().num_embeddings
        return request_prompt_ids(index, req, self.tokenizer, self._start, vocab)

    @torch.inference_mode()
    def _run_batch(self, batch, requests, prompts, seeds, samples, stop_when=None) -> None:
        reqs = [requests[r] for r, _, _ in batch]
        counts = torch.tensor([c for _, _, c in batch])
        rows = torch.repeat_interleave(torch.arange(len(batch)), counts)  # prompt of each row
        row_reqs = [reqs[i] for i in rows.tolist()]
        # many decode rows: keys/values written in place and attention by batched products
        bmm = self.bmm_decode_rows
        append = self._lean is not None and bmm is not None and len(rows) >= bmm
        if self.share_prefix:
            cache, logits, mask, last_pos = self._prefill([prompts[r] for r, _, _ in batch], append)
            rows = rows.to(self.device)
            if len(rows) != len(batch):  # share each prompt's KV cache across its samples
                cache.batch_select_indices(rows)
        else:  # one prefill row per sample
            per_row = [prompts[batch[i][0]] for i in rows.tolist()]
            cache, logits, mask, last_pos = self._prefill(per_row, append)
            rows = torch.arange(len(rows), device=self.device)
        row_seeds = [derive_seed(seeds[r], s + k) for r, s, c in batch for k in range(c)]
        owners = [(r, prompts[r]) for r, _, c in batch for _ in range(c)]
        out = self._decode(
            cache, logits[rows], mask[rows], last_pos[rows], row_reqs, row_seeds,
            (stop_when, owners) if stop_when is not None else None,
        )  # fmt: skip
        row = 0
        for (r, start, count), req in zip(batch, reqs):
            for k in range(count):
                samples[r][start + k] = self._to_sample(out, row, req)
                row += 1

    def _prefill(self, prompts: list[list[int]], append: bool = False):
        """Left-pad and run the prompts once; return cache, last logits, mask, last positions.
        `append`: an `AppendCache` (lean forward only) instead of a `DynamicCache`."""
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = AppendCache(len(prompts)) if append else DynamicCache(config=self._core.config)
        return cache, self._forward(ids, mask, pos, cache), mask, pos[:, -1]

    def _decode(self, cache, logits, mask, last_pos, row_reqs, row_seeds, caller=None) -> _Rows:
        """Sample until every row hits EOS, a stop string, its token budget or `caller`'s stop
        (`(stop_when, (request index, prompt ids) per row)`)."""
        dev = self.device
        n_rows = len(row_reqs)
        budget = torch.tensor([r.max_new_tokens for r in row_reqs], device=dev)
        steps = int(budget.max())
        temp = torch.tensor([r.temperature for r in row_reqs], dtype=torch.float32, device=dev)
        top_p = torch.tensor([r.top_p for r in row_reqs], dtype=torch.float32, device=dev)
        uniforms = row_uniforms(row_seeds, steps).to(dev)  # [R, steps]
        eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=dev)
        out = _Rows.empty(n_rows, steps, dev)
        # Only the outputs somebody asked for are stored (index writes are per-step overhead).
        wanted = [(out.tokens, 0)]
        if any(r.logprobs for r in row_reqs):
            wanted.append((out.logprobs, 1))
        if caller is not None or any(r.top_logprobs for r in row_reqs):
            wanted += [(out.top_ids, 2), (out.top_logprobs, 3)]
        stop_rows = {i for i, r in enumerate(row_reqs) if r.stop}
        active = torch.arange(n_rows, device=dev)  # original row of each batch row
        alive = torch.ones(n_rows, dtype=torch.bool, device=dev)
        full = True  # every batch row still runs: skip the boolean masking
        for step in range(steps):
            vals = sample_step(logits, temp, top_p, uniforms[:, step])
            ids = vals[0]
            live = active if full else active[alive]
            for field, k in wanted:
                field[live, step] = vals[k] if full else vals[k][alive]
            out.lengths[live] = step + 1
            code = torch.where(torch.isin(ids if full else ids[alive], eos), _EOS, 0)
            code = torch.where((code == 0) & (budget[live] <= step + 1), _LENGTH, code)
            if stop_rows:
                code = self._check_stops(out, live, code, row_reqs, stop_rows)
            if caller is not None:
                code = self._ask_caller(out, live, code, *caller)
            out.reasons[live] = code
            if full:
                alive = code == 0
            else:
                alive[alive.clone()] = code == 0
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            full = n_alive == len(alive)
            if len(alive) - n_alive >= max(1, len(alive) // 4):  # drop finished rows
                keep = alive.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, mask, last_pos, ids = active[keep], mask[keep], last_pos[keep], ids[keep]
                temp, top_p, uniforms = temp[keep], top_p[keep], uniforms[keep]
                alive = torch.ones(len(keep), dtype=torch.bool, device=dev)
                full = True
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            last_pos = last_pos + 1
            logits = self._forward(ids.unsqueeze(-1), mask, last_pos.unsqueeze(-1), cache)
        return out

    def _check_stops(self, out: _Rows, live, code, row_reqs, stop_rows) -> torch.Tensor:
        """Set `_STOP` for live rows whose latest token completed one of their stop strings."""
        codes = code.tolist()
        for j, row in enumerate(live.tolist()):
            if row not in stop_rows or codes[j] == _EOS:
                continue
            stops, n = row_reqs[row].stop, int(out.lengths[row])
            # The stop string ends in the last few tokens' text; a character can span up to 4
            # byte-level tokens, so look back 4 tokens per stop character (plus slack).
            window = 4 * max(len(s) for s in stops) + 4
            tail = self._decode_text(out.tokens[row, max(0, n - window) : n].tolist())
            if any(s in tail for s in stops):
                codes[j] = _STOP
        return torch.tensor(codes, dtype=code.dtype, device=code.device)

    @staticmethod
    def _ask_caller(out: _Rows, live, code, stop_when: StopWhen, owners) -> torch.Tensor:
        """Set `_STOP` for live rows still running whose caller says `stop_when`."""
        codes = code.tolist()
        for j, row in enumerate(live.tolist()):
            if codes[j] == 0:
                n = int(out.lengths[row])
                index, prompt = owners[row]
                ids, top = out.tokens[row, :n].tolist(), out.top_logprobs[row, :n].tolist()
                if stop_when(index, prompt, ids, top):
                    codes[j] = _STOP
        return torch.tensor(codes, dtype=code.dtype, device=code.device)

    def _to_sample(self, out: _Rows, row: int, req: GenerationRequest) -> Sample:
        n, reason = int(out.lengths[row]), _REASONS[int(out.reasons[row])]
        ids = out.tokens[row, :n].tolist()
        text = self._decode_text(ids[:-1] if reason == "eos" else ids)
        if reason == "stop":
            cut = min((i for i in (text.find(s) for s in req.stop) if i >= 0), default=len(text))
            text = text[:cut]
        sample = Sample(token_ids=ids, text=text, finish_reason=reason)  # type: ignore[arg-type]
        if req.logprobs:
            sample.logprobs = out.logprobs[row, :n].tolist()
        if req.top_logprobs:
            sample.top_token_ids = out.top_ids[row, :n].tolist()
            sample.top_logprobs = out.top_logprobs[row, :n].tolist()
        return sample

    def _decode_text(self, ids: list[int]) -> str:
        return decode_continuation(self.tokenizer, ids, self._anchor)
