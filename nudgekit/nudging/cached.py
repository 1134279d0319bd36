"""The cached nudging decoder: both models resident, per-row KV caches, many questions at once.

It makes the same decisions as the chunked reference (`reference.py`, through the same `rules`)
on the same token ids, so in greedy mode it writes the same text; what changes is the cost:

- **Caches instead of re-sent prompts.** Each model keeps a `RowCache`; a request names the
  ids a row should hold (`encode(prompt + shared text)`), and only the tokens after the longest
  common prefix are fed. A rejected draft or base token is rolled back, never re-prefilled.
- **Cross-tokenizer by text.** The models share only the output text. Whoever wrote last, the
  other model re-tokenises the text and its cache keeps every token up to the first one that
  changed, which is at or just before the last word boundary: a word split differently by the two
  tokenizers, a leading space that merges into the next token, or an end-of-sequence that only
  one model has, all reduce to "re-feed from where the ids first differ".
- **The base works while the nudging model drafts.** A question may ask both models for a token
  in the same tick. Each word boundary of the draft is probed as soon as the draft has written
  enough of the next word to decide the takeover rule, and once the base has taken over it starts
  its completion while the nudging model finishes the K-token draft (which the reference needs
  whole, to see whether it ends the answer). If the draft does end with end-of-sequence, the
  base's speculative work is thrown away (its cache rolls back), exactly as the reference never
  probes such a draft. A round therefore takes about max(K, probes + completion) ticks instead of
  K + 1 + completion. Every boundary is probed on its own ids, as in the reference, so a boundary
  that a tokenizer splits differently alone than inside the draft needs no special case.
- **Lazy chunks.** The reference generates whole K-token chunks and then cuts them at the first
  token below gamma; here a chunk stops at that token unless the chunk's text could still turn
  out to repeat what the base just wrote (the reference's "chunk already written" rule), in
  which case it runs on until the rule is decided.
- **Continuous batching.** Each question is a generator over its own state; every tick runs at
  most one forward pass per model, over just the rows that need that model (`RowCache`), and a
  finished row takes the next question. `stream` takes questions from a callable instead of a
  list, so questions that arrive while others decode join the running batch (the server).

Differences to the reference that remain are floating-point: a batched or incremental forward
rounds differently from a fresh prefill, which can flip a greedy argmax tie or a top-1
probability within ~1e-6 of gamma.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from nudgekit.errors import NudgekitError
from nudgekit.inference import FORWARD_COST, SyncRequest
from nudgekit.nudging.attribution import BASE, NUDGE, NudgeOutput, Transcript, finish
from nudgekit.nudging.reference import check_settings
from nudgekit.nudging.roles import require_resident
from nudgekit.nudging.rules import Chunk, Draft, RepeatState, is_repetition, takeover_decided
from nudgekit.nudging.sides import WAIT, LiveDraft, Program, RowState, Side, Single
from nudgekit.nudging.text import encode, pieces


class CachedNudgingDecoder:
    """Nudging with resident models, KV caches and continuous batching (see module docstring).

    Args:
        base: the large base model: anything with `.model` and `.tokenizer` (e.g. `HFEngine`).
        nudging: the small aligned (nudging) model, likewise.
        gamma: the base model takes over where its top-1 probability is >= gamma.
        chunk_tokens: tokens per nudging draft and per base chunk (K).
        max_new_tokens: output budget in base-tokenizer tokens.
        max_rounds: most nudging rounds per question.
        base_temperature: sampling temperature of the base model (0 = greedy).
        nudging_temperature: sampling temperature of the nudging model (0 = greedy).
        top_p: nucleus mass for both models when sampling.
        seed: seeds the per-question random streams (question i gets its own).
        batch_size: questions decoded at once.
        lean_forward: run Llama/Qwen2 models through `inference.LeanForward` (same logits,
            less Python per forward); False uses the `transformers` forward.
        forward_cost: a forward's fixed cost in row-tokens, above which rows feeding few
            tokens are not padded to a long feed in the same tick (`inference.RowCache`); `inf`:
            one forward per model per tick.
    """

    def __init__(
        self,
        base: Any,
        nudging: Any,
        gamma: float = 0.3,
        chunk_tokens: int = 16,
        max_new_tokens: int = 512,
        max_rounds: int = 150,
        base_temperature: float = 0.0,
        nudging_temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        batch_size: int = 16,
        lean_forward: bool = True,
        forward_cost: float = FORWARD_COST,
    ) -> None:
        check_settings(gamma, chunk_tokens, max_new_tokens, max_rounds)
        if batch_size < 1:
            raise NudgekitError(f"nudging: batch_size={batch_size} must be >= 1")
        if not forward_cost >= 0:
            raise NudgekitError(f"nudging: forward_cost={forward_cost} must be >= 0")
        for name, lm in (("base", base), ("nudging", nudging)):
            require_resident(lm, name, "the cached decoder")  # not a remote or vLLM engine
        self.base_lm, self.nudging_lm = base, nudging
        self.gamma, self.k = gamma, chunk_tokens
        self.max_new_tokens, self.max_rounds = max_new_tokens, max_rounds
        self.base_t, self.nudging_t, self.top_p = base_temperature, nudging_temperature, top_p
        self.seed, self.batch_size, self.lean_forward = seed, batch_size, lean_forward
        self.forward_cost = forward_cost
        self.base_tok, self.nudging_tok = base.tokenizer, nudging.tokenizer
        self.forwards = {"base": 0, "nudging": 0}  # forward passes of the last decode call

    def count(self, text: str) -> int:
        """Output tokens of `text` (base tokenizer)."""
        return len(encode(self.base_tok, text))

    @torch.inference_mode()
    def decode(
        self, base_prompts: Sequence[str], nudging_prompts: Sequence[str], progress: bool = False
    ) -> list[NudgeOutput]:
        """One collaborative answer per question (prompts rendered for each model); `progress`
        shows a tqdm bar over finished questions."""
        if len(base_prompts) != len(nudging_prompts):
            raise NudgekitError("nudging: base and nudging prompt lists differ in length")
        n = len(base_prompts)
        results: list[NudgeOutput | None] = [None] * n
        order = iter(range(n))

        def take() -> tuple[str, str, int] | None:
            q = next(order, None)
            return None if q is None else (base_prompts[q], nudging_prompts[q], q)

        with tqdm(total=n, desc="nudging", unit="q", disable=not progress) as bar:

            def done(q: int, out: NudgeOutput) -> None:
                results[q] = out
                bar.update()

            if n:
                self.stream(take, done, rows=min(self.batch_size, n))
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def stream(
        self,
        take: Callable[[], tuple[str, str, int] | None],
        done: Callable[[int, NudgeOutput], None],
        rows: int | None = None,
    ) -> None:
        """Decode questions as `take()` hands them out, at most `rows` (default `batch_size`) at
        once, and hand each answer to `done(key, output)` as soon as it is finished.

        `take()` returns `(base_prompt, nudging_prompt, key)` (`key`: an int, the question's
        sampling-seed key) or None when no question is waiting now; a row freed by a finished
        question asks at once, and idle rows ask again after every tick, so a question that
        arrives while others decode joins them (continuous batching; `nudgekit.serve` feeds its
        queue in this way). Returns once no question runs and `take()` has none."""
        rows = self.batch_size if rows is None else rows
        lean, cost = self.lean_forward, self.forward_cost
        base = Side(self.base_lm, rows, self.base_t, self.top_p, self.seed, lean, cost)
        nudge = Side(self.nudging_lm, rows, self.nudging_t, self.top_p, self.seed + 1, lean, cost)
        running: dict[int, RowState] = {}

        def launch(row: int) -> bool:
            """Start questions in `row` until one runs (False: none was waiting)."""
            while (item := take()) is not None:
                prompt_b, prompt_n, key = item
                base.start(row, prompt_b, key)
                nudge.start(row, prompt_n, key)
                if advance(row, key, self._program(row, base, nudge), None):
                    return True
            return False

        def advance(row: int, key: int, program: Program, picks) -> bool:
            """Send `picks`; True while the question still runs."""
            try:
                wants = next(program) if picks is None else program.send(picks)
            except StopIteration as finished:
                running.pop(row, None)
                done(key, finished.value)
                return False
            running[row] = RowState(key, program, wants, [None] * len(wants))
            return True

        def fill() -> None:
            for row in range(rows):
                if row not in running and not launch(row):
                    return

        fill()
        while running:
            # one forward per model; a row whose requests are all answered moves on at once, so
            # it can use the base model in the same tick as the nudging model
            for side in (nudge, base):
                asks = [(r, k) for r, st in running.items() for k, (s, _) in enumerate(st.wants)
                        if s is side and st.picks[k] is None]  # fmt: skip
                if not asks:
                    continue
                picks = side.serve([running[r].wants[k][1] for r, k in asks])
                for (r, k), pick in zip(asks, picks):
                    running[r].picks[k] = pick
                for r in dict.fromkeys(r for r, _ in asks):
                    st = running[r]
                    if st.answered and not advance(r, st.question, st.program, st.picks):
                        launch(r)
            fill()
        self.forwards = {"base": base.cache.forwards, "nudging": nudge.cache.forwards}

    # ------------------------------------------------------------------ one question

    def _program(self, row: int, base: Side, nudge: Side) -> Program:
        """The reference loop for one question, yielding model requests (see reference.py)."""
        out, repeats, rounds, stop = Transcript(), RepeatState(), 0, None
        while self.count(out.text) < self.max_new_tokens and rounds < self.max_rounds:
            rounds += 1
            draft = LiveDraft(nudge, nudge.encode(row, out.text))
            writing = self._generate(nudge, row, draft.ids, self.k, live=draft)
            turn = self._base_turn(base, row, out.text, draft, repeats)
            takeover, written = yield from self._together(writing, turn, draft)
            if draft.chunk.eos:  # the base's speculative work (if any) is discarded
                out.add(draft.chunk.text, NUDGE)
                stop = "nudging_eos"
                break
            kept = Draft.parse(draft.chunk.text).accepted(takeover)
            repeats, repeated = repeats.update(kept)
            if repeated:
                stop = "repeated_nudging_words"
                break
            out.add(kept, NUDGE)
            out.add(written, BASE)
        spent = self.count(out.text) >= self.max_new_tokens
        return finish(out, stop, rounds, spent, self.base_tok, self.nudging_tok)

    @staticmethod
    def _together(writing: Single, turn: Generator, draft: LiveDraft):
        """Run the nudging draft and the base's turn side by side, one request each per tick.

        `turn` yields WAIT while it needs more of the draft; it is stopped if the draft ends with
        end-of-sequence (the reference would not have probed that draft). Returns `turn`'s value
        (`(None, "")` after such a stop).
        """
        d_req, b_req, b_out = next(writing), next(turn), None
        while not (draft.done and (b_out is not None or draft.chunk.eos)):
            asks = [] if draft.done else [d_req]
            if b_out is None and b_req:
                asks.append(b_req)
            picks = iter((yield asks))
            if not draft.done:
                try:
                    d_req = writing.send(next(picks))
                except StopIteration as done:
                    draft.chunk = done.value
            if b_out is None and not (draft.done and draft.chunk.eos):
                try:  # a waiting turn looks at the draft again
                    b_req = turn.send(next(picks) if b_req else None)
                except StopIteration as done:
                    b_out = done.value
        turn.close()
        return b_out if b_out is not None else (None, "")

    def _base_turn(self, base: Side, row: int, output: str, draft: LiveDraft, repeats: RepeatState):
        """Probe the draft's boundaries as they appear; after a takeover, the base completion.

        Returns:
            `(word index of the takeover or None, the base text)`; no text when the base's token
            at the takeover is end-of-sequence or the kept words would stop the question.
        """
        j = 1
        while True:
            words, complete = draft.words()
            if len(words.words) <= j:  # word j has not started
                if draft.done:
                    return None, ""
                yield WAIT
                continue
            if not words.words[j]:  # an empty word (double space) is never probed
                if complete(j):
                    j += 1
                    continue
                yield WAIT
                continue
            ids = base.encode(row, output + words.text_before(j))
            pick = (yield base, SyncRequest(row, ids))[len(ids)]
            text = "" if pick.token in base.eos else pieces(base.tok, ids, [pick.token])[0]
            while (decided := takeover_decided(
                words.next_word(j), complete(j), text, pick.prob, self.gamma)) is None:  # fmt: skip
                yield WAIT
                words, complete = draft.words()
            if decided:
                break
            j += 1
        kept = words.text_before(j)
        if pick.token in base.eos or repeats.update(kept)[1]:
            return j, ""
        written = yield from self._base_completion(base, row, output + kept, ids, pick.token)
        return j, written

    def _generate(
        self,
        side: Side,
        row: int,
        ids: list[int],
        max_new: int,
        until: Callable[[list[float], Callable[[], str]], bool] | None = None,
        lead: Sequence[int] = (),
        live: LiveDraft | None = None,
    ) -> Single:
        """Up to `max_new` tokens after `ids + lead` (lead: already chosen tokens of the chunk,
        whose pieces are not returned). Stops at EOS, at `max_new`, or when `until` says so;
        `live` sees every token as it is chosen (and its pieces make the returned chunk)."""
        context = [*ids, *lead]
        new: list[int] = []
        probs: list[float] = []

        def chunk(eos: bool) -> Chunk:
            if live is not None:
                return Chunk(tuple(live.pieces), tuple(probs), eos)
            return self._chunk(side, ids, lead, new, probs, eos)

        while True:
            picks = yield side, SyncRequest(row, context + new)
            pick = picks[len(context) + len(new)]
            probs.append(pick.prob)
            if pick.token in side.eos:
                return chunk(eos=True)
            new.append(pick.token)
            if live is not None:
                live.add(pick.token)
            if len(new) == max_new or (
                until is not None and until(probs, lambda: chunk(False).text)
            ):
                return chunk(eos=False)

    @staticmethod
    def _chunk(side, ids, lead, new, probs, eos: bool) -> Chunk:
        texts = pieces(side.tok, ids, [*lead, *new])[len(lead) :]
        return Chunk(tuple(texts), tuple(probs), eos)

    def _base_completion(self, base: Side, row: int, output: str, probe_ids, first: int):
        """The base model's text after a takeover (the reference's `complete_with_base`)."""
        budget = self.max_new_tokens - self.count(output)
        written = pieces(base.tok, probe_ids, [first])[0]
        is_first, uncertain = True, False
        while self.count(written) < budget and not uncertain:
            until = self._until(written)
            if is_first:
                chunk = yield from self._generate(
                    base, row, probe_ids, self.k - 1, until, lead=[first]
                )
            else:
                ids = base.encode(row, output + written)
                chunk = yield from self._generate(base, row, ids, self.k, until)
            if chunk.text in written:
                break
            new, uncertain = chunk.kept(self.gamma)
            if is_repetition(new, output + written):
                break
            written += new
            if chunk.eos and not is_first:
                break
            is_first = False
        return written

    def _until(self, written: str) -> Callable[[list[float], Callable[[], str]], bool]:
        """Stop a base chunk once it holds a token below gamma and can no longer turn out to be
        text the base already wrote (both reference rules are then decided)."""

        def stop(probs: list[float], text: Callable[[], str]) -> bool:
            return min(probs) < self.gamma and text() not in written

        return stop
