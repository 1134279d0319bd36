"""The chunked reference nudging decoder: the paper's algorithm over any `Engine`, step for step.

This is the semantic reference the cached decoder is tested against. Like
`utils.py:completion_with_nudging` (github fywalter/nudging), every model call is a fresh
completion request on *text* (`prompt + output + ...`), and each question runs this loop in
order:

1. the nudging model drafts `chunk_tokens` tokens after its prompt + the output so far; if it
   ends with end-of-sequence, the draft is appended whole and decoding stops;
2. the draft is cut into words; at each boundary after the first word the base model completes
   `chunk_tokens` tokens from its prompt + output + the draft words before the boundary, and
   takes over at the first boundary where its first token is confident (top-1 >= gamma) or
   starts the next draft word; without a takeover the draft minus its last word is kept;
3. after a takeover the base keeps its probe completion and continues in `chunk_tokens` chunks,
   each cut before its first token below gamma, until such a token appears, the base ends its
   turn, a chunk only repeats text, or the token budget is spent;
4. rounds stop at `max_rounds`, at `max_new_tokens` output tokens (counted with the base
   tokenizer; the reference counts with tiktoken), or when the same nudging words were kept
   four rounds in a row; the output is stripped and repeated tails are trimmed.

Departures (also in `rules`): a base end-of-sequence token at a probe counts as "confident or
not" by its probability only, and a takeover by it ends the round (the reference's empty-probe
branch); probes run one engine call each, in order, stopping at the first takeover (as the
reference does). Engines must return top-1 log-probs (`GenerationRequest.top_logprobs`).

Lazy base calls (`lazy`, engines whose `generate` takes `stop_when`: the hf engine). The
reference generates every base call's whole K-token chunk, but reads most of it only sometimes:
a probe's tokens after the first only when it takes over, and a chunk's tokens after its first
one below gamma only for the "chunk already written" rule. A lazy call stops as soon as the rest
of its chunk can no longer change any decision (a probe that does not take over after its first
token; a chunk once it holds a token below gamma and its text is not in what the base just
wrote; a takeover whose completion gets no budget after its first token), so it decides exactly
as the whole chunk would, from the same forwards (a stopped call is the start of the whole one).
Nudging drafts are always whole.

Concurrency: like the reference's driver (a thread pool over two servers), up to `concurrency`
questions run at once, each in its own thread, when an engine can serve concurrent calls (an
`OpenAIEngine`, or any engine with `thread_safe = True`); calls to other engines (hf, vLLM
offline) are serialised by a lock, and with no such engine at all questions run one after the
other. A question's calls and seeds do not depend on the others, so results come back in input
order and, greedy, are the same for every `concurrency`. The first failure stops the rest: the
questions still running raise at their next call and the failure is raised.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from tqdm.auto import tqdm

from nudgekit.engines.base import Engine, GenerationRequest
from nudgekit.engines.sampling import derive_seed
from nudgekit.errors import NudgekitError
from nudgekit.nudging.attribution import BASE, NUDGE, NudgeOutput, Transcript, finish
from nudgekit.nudging.rules import (
    Chunk,
    Draft,
    RepeatState,
    base_takes_over,
    is_repetition,
)
from nudgekit.nudging.text import PieceStream, encode, pieces


class ChunkedNudgingDecoder:
    """Nudging over two engines, one call per step, many questions at once (simple, exact).

    Args:
        base: the engine of the large base model (needs a `tokenizer` attribute, or pass
            `base_tokenizer`).
        nudging: the engine of the small aligned (nudging) model.
        gamma: the base model takes over where its top-1 probability is >= gamma.
        chunk_tokens: tokens per nudging draft and per base completion call (K).
        max_new_tokens: output budget in base-tokenizer tokens.
        max_rounds: most nudging rounds.
        base_temperature: sampling temperature of the base model (0 = greedy).
        nudging_temperature: sampling temperature of the nudging model (0 = greedy).
        top_p: nucleus mass for both models when sampling.
        seed: base seed of sampling requests.
        base_tokenizer: overrides `base.tokenizer`.
        nudging_tokenizer: overrides `nudging.tokenizer`.
        concurrency: most questions in flight at once (threads; see module docstring).
        lazy: stop base calls once the rest of their chunk cannot change a decision (see the
            module docstring; engines without `stop_when` always generate whole chunks).
    """

    def __init__(
        self,
        base: Engine,
        nudging: Engine,
        gamma: float = 0.3,
        chunk_tokens: int = 16,
        max_new_tokens: int = 512,
        max_rounds: int = 150,
        base_temperature: float = 0.0,
        nudging_temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        base_tokenizer: Any = None,
        nudging_tokenizer: Any = None,
        concurrency: int = 16,
        lazy: bool = True,
    ) -> None:
        check_settings(gamma, chunk_tokens, max_new_tokens, max_rounds)
        if concurrency < 1:
            raise NudgekitError(f"nudging: concurrency={concurrency} must be >= 1")
        self.base, self.nudging = base, nudging
        self.base_tok = _tokenizer(base, base_tokenizer, "base")
        self.nudging_tok = _tokenizer(nudging, nudging_tokenizer, "nudging")
        self.gamma, self.k = gamma, chunk_tokens
        self.max_new_tokens, self.max_rounds = max_new_tokens, max_rounds
        self.base_t, self.nudging_t, self.top_p = base_temperature, nudging_temperature, top_p
        self.seed, self.lazy = seed, lazy
        self.calls = 0  # engine calls made (for benchmarks)
        self.tokens = 0  # tokens those calls generated (for benchmarks)
        # engines that cannot serve concurrent calls get a lock (one per engine object)
        self._locks = {id(e): threading.Lock() for e in (base, nudging) if not thread_safe(e)}
        parallel = len(self._locks) < len({id(base), id(nudging)})
        self.concurrency = concurrency if parallel else 1
        self._count_lock = threading.Lock()
        self._failed = threading.Event()

    def count(self, text: str) -> int:
        """Output tokens of `text` (base tokenizer)."""
        return len(encode(self.base_tok, text))

    def decode(
        self, base_prompts: Sequence[str], nudging_prompts: Sequence[str], progress: bool = False
    ) -> list[NudgeOutput]:
        """One collaborative answer per question (prompts rendered for each model); `progress`
        shows a tqdm bar over finished questions."""
        if len(base_prompts) != len(nudging_prompts):
            raise NudgekitError("nudging: base and nudging prompt lists differ in length")
        jobs = list(enumerate(zip(base_prompts, nudging_prompts)))
        workers = min(self.concurrency, len(jobs))
        self._failed.clear()
        with tqdm(total=len(jobs), desc="nudging", unit="q", disable=not progress) as bar:
            if workers <= 1:
                outputs = []
                for i, (b, n) in jobs:
                    outputs.append(self._one(i, b, n))
                    bar.update()
                return outputs
            with ThreadPoolExecutor(workers, thread_name_prefix="nudging") as pool:
                futures = [pool.submit(self._guarded, i, b, n) for i, (b, n) in jobs]
                for f in futures:
                    f.add_done_callback(lambda _: bar.update())
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:  # the first real failure, not a question stopped because of it
            raise next((e for e in errors if not isinstance(e, _Stopped)), errors[0])
        return [f.result() for f in futures]

    def _guarded(self, index: int, base_prompt: str, nudging_prompt: str) -> NudgeOutput:
        try:
            return self._one(index, base_prompt, nudging_prompt)
        except BaseException:
            self._failed.set()
            raise

    def _one(self, index: int, base_prompt: str, nudging_prompt: str) -> NudgeOutput:
        out, repeats = Transcript(), RepeatState()
        rounds, stop = 0, None
        seeds = iter(range(10**9))
        while self.count(out.text) < self.max_new_tokens and rounds < self.max_rounds:
            rounds += 1
            draft = self._complete(self.nudging, nudging_prompt + out.text, (index, next(seeds)))
            if draft.eos:
                out.add(draft.text, NUDGE)
                stop = "nudging_eos"
                break
            words = Draft.parse(draft.text)
            takeover, probe = None, None
            for j in words.probe_points():
                text = base_prompt + out.text + words.text_before(j)
                until = self._probe_until(words, j, out.text, repeats)
                probe = self._complete(self.base, text, (index, next(seeds)), until)
                if base_takes_over(
                    words.next_word(j), probe.first_text, probe.probs[0], self.gamma
                ):
                    takeover = j
                    break
            kept = words.accepted(takeover)
            repeats, repeated = repeats.update(kept)
            if repeated:
                stop = "repeated_nudging_words"
                break
            out.add(kept, NUDGE)
            if takeover is None or probe.starts_with_eos:
                continue
            out.add(self._base_completion(base_prompt, out.text, probe, index, seeds), BASE)
        spent = self.count(out.text) >= self.max_new_tokens
        return finish(out, stop, rounds, spent, self.base_tok, self.nudging_tok)

    def _base_completion(self, base_prompt, output, probe: Chunk, index, seeds) -> str:
        """The base model's text after a takeover (the reference's `complete_with_base`)."""
        budget = self.max_new_tokens - self.count(output)
        written, chunk, first = probe.first_text, probe.tail(), True
        uncertain = False
        while self.count(written) < budget and not uncertain:
            if not first:
                until = partial(_chunk_decided, gamma=self.gamma, written=written)
                chunk = self._complete(
                    self.base, base_prompt + output + written, (index, next(seeds)), until
                )
            if chunk.text in written:  # the chunk only repeats what the base just wrote
                break
            new, uncertain = chunk.kept(self.gamma)
            if is_repetition(new, output + written):
                break
            written += new
            if chunk.eos and not first:  # the probe's own end is not checked (as in the reference)
                break
            first = False
        return written

    def _probe_until(self, words: Draft, j: int, output: str, repeats: RepeatState):
        """When a probe at word `j` has shown all that its chunk can decide (`Chunk` so far ->
        stop): no takeover after its first token; after a takeover, what `_base_completion`
        reads of its tail (nothing when the round stops or no budget is left)."""

        def until(chunk: Chunk) -> bool:
            if len(chunk.pieces) == 1:
                first = chunk.first_text
                if not base_takes_over(words.next_word(j), first, chunk.probs[0], self.gamma):
                    return True
                kept = words.text_before(j)
                spent = self.count(first) >= self.max_new_tokens - self.count(output + kept)
                return spent or repeats.update(kept)[1]
            return _chunk_decided(chunk.tail(), self.gamma, chunk.first_text)

        return until

    def _complete(
        self,
        engine: Engine,
        prompt: str,
        key: tuple[int, int],
        until: Callable[[Chunk], bool] | None = None,
    ) -> Chunk:
        """`chunk_tokens` tokens from one engine call, with top-1 probabilities; with `lazy`
        and an engine that takes `stop_when`, only until `until(chunk so far)` says so."""
        is_base = engine is self.base
        tok = self.base_tok if is_base else self.nudging_tok
        request = GenerationRequest(
            prompt=prompt,
            n=1,
            max_new_tokens=self.k,
            temperature=self.base_t if is_base else self.nudging_t,
            top_p=self.top_p,
            seed=derive_seed(self.seed, key[0] * 1_000_003 + key[1]),
            top_logprobs=True,
        )
        if self._failed.is_set():
            raise _Stopped
        lazy = {}
        if until is not None and self.lazy and takes_stop_when(engine):
            lazy["stop_when"] = _Watch(tok, until)
        with self._locks.get(id(engine)) or contextlib.nullcontext():
            result = engine.generate([request], **lazy)[0]
        sample = result.samples[0]
        with self._count_lock:
            self.calls += 1
            self.tokens += len(sample.token_ids)
        if sample.top_logprobs is None:
            raise NudgekitError("nudging: the engine returned no top-1 log-probs")
        ids = list(sample.token_ids)
        eos = sample.finish_reason == "eos"
        if eos and ids:
            ids = ids[:-1]
        probs = tuple(math.exp(lp) for lp in sample.top_logprobs)
        return Chunk(tuple(pieces(tok, result.prompt_ids, ids)), probs, eos)


def _chunk_decided(chunk: Chunk, gamma: float, written: str) -> bool:
    """A base chunk's remaining tokens cannot change `_base_completion`'s reading of it: it holds
    a token below `gamma` (the cut is known) and its text is not in `written` (nor will any
    longer text be, so the "chunk already written" rule is decided too)."""
    return min(chunk.probs) < gamma and chunk.text not in written


class _Watch:
    """`stop_when` for one engine call: the chunk so far (pieces decoded as they come) -> `until`."""

    def __init__(self, tokenizer: Any, until: Callable[[Chunk], bool]) -> None:
        self.tokenizer, self.until = tokenizer, until
        self.stream: PieceStream | None = None
        self.pieces: list[str] = []

    def __call__(self, index: int, prompt_ids: list[int], ids: list[int], top: list[float]) -> bool:
        if self.stream is None:
            self.stream = PieceStream(self.tokenizer, prompt_ids)
        self.pieces += [self.stream.add(t) for t in ids[len(self.pieces) :]]
        probs = tuple(math.exp(lp) for lp in top)
        return self.until(Chunk(tuple(self.pieces), probs, eos=False))


def takes_stop_when(engine: Any) -> bool:
    """Whether `engine.generate` takes `stop_when` (ends a sample when the caller says so)."""
    try:
        return "stop_when" in inspect.signature(engine.generate).parameters
    except (TypeError, ValueError):
        return False


def thread_safe(engine: Any) -> bool:
    """Whether `engine.generate` may be called from several threads at once."""
    from nudgekit.engines.openai import OpenAIEngine

    return isinstance(engine, OpenAIEngine) or bool(getattr(engine, "thread_safe", False))


class _Stopped(Exception):
    """A question stopped because another one failed (never surfaces)."""


def check_settings(gamma: float, chunk_tokens: int, max_new_tokens: int, max_rounds: int) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise NudgekitError(f"nudging: gamma={gamma} must lie in [0, 1]")
    if chunk_tokens < 2:
        raise NudgekitError(f"nudging: chunk_tokens={chunk_tokens} must be >= 2")
    if max_new_tokens < 1 or max_rounds < 1:
        raise NudgekitError("nudging: max_new_tokens and max_rounds must be >= 1")


def _tokenizer(engine: Any, tokenizer: Any, which: str) -> Any:
    tok = tokenizer if tokenizer is not None else getattr(engine, "tokenizer", None)
    if tok is None:
        raise NudgekitError(
            f"nudging: the {which} engine has no tokenizer; give it one (in config: "
            "engine.tokenizer={_target_:nudgekit.models.load_tokenizer,name_or_path:PATH}) "
            f"or pass {which}_tokenizer"
        )
    return tok
