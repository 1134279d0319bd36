"""Generated hint sources: `self` (the policy being trained) and `engine` (any other model).

The paper's two-step recipe, batched over all problems (one engine call per step per round):

1. explain: the model sees the question and the gold answer and explains how to reach it
   (`explain_template`, placeholders `{question}` and `{answer}`);
2. hint: the model sees question, answer and explanation and writes the hint
   (`hint_templates[type]`, placeholders `{question}`, `{answer}`, `{explanation}`).

Hint types: `abstract` is the cue written in step 2. The other types use their prompt variant in
`hint_templates` when one is configured; without one they are derived from the explanation
without a second call: `partial` = the first half of its non-empty lines (never the last),
`full` = the whole explanation, `answer` = ``"The answer is <a>."`` (no model call at all).

Every candidate goes through the leakage filter; a rejected one is regenerated with sampling
(`retry_temperature`, a fresh seed per attempt) up to `max_attempts` generations, then the
problem is dropped and counted. Departures from the paper: the first attempt is greedy by default
(reproducible hints); a retry of a template type resamples only the hint step, keeping the
explanation, while a retry of a derived type resamples the explanation.

The engine is built lazily: given as a factory (a Hydra `_partial_`), it is built when `collect`
starts and released (closed, memory freed) when it ends, so a hint writer never sits beside the
trainer's models. `SelfHints` inside the NuRL trainer writes with the trainer's own rollout
engine (`bind`) and builds nothing.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.engines.base import GenerationRequest
from nudgekit.errors import NudgekitError
from nudgekit.nurl.sources import CollectingSource, HintCollection, LeakCheck, check_hint_type
from nudgekit.nurl.store import HintRecord

# the tiny world's hint-writing format (nudgekit.zoo.prompts: explain_message / cue_message)
TINY_EXPLAIN = "{question}\nAnswer: {answer}\nExplain:"
TINY_ABSTRACT = "{question}\nAnswer: {answer}\nExplanation:\n{explanation}\nAbstract hint:"
_PLACEHOLDER = re.compile(r"\{(question|answer|explanation)\}")

# (text, truncated) of one generated candidate
Candidate = tuple[str, bool]


def fill_template(template: str, **values: str) -> str:
    """Substitute `{question}`, `{answer}`, `{explanation}` in one pass (other braces stay)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def first_half(explanation: str) -> str:
    """The partial-steps hint: the first half of the non-empty lines, never the last one."""
    lines = [ln.strip() for ln in explanation.splitlines() if ln.strip()]
    return "; ".join(lines[: len(lines) // 2])


def attempt_seed(seed: int, problem_id: str, attempt: int, stage: str) -> int:
    """A per-problem, per-attempt seed, so hints do not depend on batch composition."""
    digest = hashlib.sha256(f"{seed}/{problem_id}/{attempt}/{stage}".encode()).hexdigest()
    return int(digest[:15], 16)


def collect_with_retries(
    problems: Sequence[Problem],
    generate: Callable[[list[Problem], int], dict[str, Candidate]],
    check: Callable[[Problem, str], str | None],
    max_attempts: int,
) -> tuple[dict[str, tuple[str, int, list[str]]], HintCollection]:
    """The counted regeneration loop.

    Args:
        problems: problems to write hints for.
        generate: `(pending problems, attempt) -> {id: (text, truncated)}` for one round.
        check: `(problem, hint) -> rejection reason | None`.
        max_attempts: generations per problem before it is dropped.

    Returns:
        `({id: (hint, attempts, rejections)}, collection)` where the collection holds `dropped`,
        `rejections` and `generations` (its records are filled by the caller).
    """
    if max_attempts < 1:
        raise NudgekitError(f"hints: max_attempts must be >= 1, got {max_attempts}")
    out = HintCollection()
    accepted: dict[str, tuple[str, int, list[str]]] = {}
    reasons: dict[str, list[str]] = {p.id: [] for p in problems}
    pending = list(problems)
    for attempt in range(max_attempts):
        if not pending:
            break
        made = generate(pending, attempt)
        still = []
        for p in pending:
            text, truncated = made.get(p.id, ("", False))
            out.generations += 1
            reason = "truncated" if truncated else check(p, text)
            if reason is None:
                accepted[p.id] = (text.strip(), attempt + 1, reasons[p.id])
                continue
            out.rejections[reason] += 1
            reasons[p.id].append(reason)
            still.append(p)
        pending = still
    out.dropped = {p.id: reasons[p.id] for p in pending}
    return accepted, out


class ChatRenderer:
    """`(user text) -> prompt text`: one user turn in the model's chat template.

    Args:
        model: a `ModelSpec` whose tokenizer renders the turn (None: the plain fallback).
        system: optional system turn.
        chat: False returns the user text as is (a completion-style prompt).
    """

    def __init__(self, model: Any = None, system: str | None = None, chat: bool = True) -> None:
        self.model, self.system, self.chat = model, system, chat
        self._tokenizer: Any = None

    def __call__(self, user: str) -> str:
        if not self.chat:
            return user
        from nudgekit.models.chat import apply_chat_template

        if self._tokenizer is None and self.model is not None:
            self._tokenizer = self.model.load_tokenizer()
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": user})
        return apply_chat_template(self._tokenizer, messages)


class EngineHints(CollectingSource):
    """Hints written by a model behind any engine (the `engine` source).

    Args:
        engine: the generation engine (hf, vllm, openai), or a zero-argument factory of one,
            built by `collect` and released when it returns.
        render: `(user text) -> prompt text` for that model (a `ChatRenderer`).
        type: hint type ("abstract", "partial", "full", "answer").
        explain_template: step-1 user turn (`{question}`, `{answer}`).
        hint_templates: type -> step-2 user turn (`{question}`, `{answer}`, `{explanation}`);
            a type without one is derived from the explanation (see the module docstring).
        leak_filter: `(hint, answer, type) -> reason | None` (None: only empty hints rejected).
        max_attempts: generations per problem before it is dropped.
        explain_max_new_tokens: step-1 budget.
        hint_max_new_tokens: step-2 budget (a hint cut off by it is rejected as "truncated").
        temperature: first-attempt temperature (0 = greedy).
        retry_temperature: temperature of regenerations.
        top_p: nucleus mass.
        stop: stop strings for both steps.
        seed: base seed.
        model_name: provenance of the model (e.g. its path or hub id).
        source: the provenance name (default "engine"; "self" when the engine serves a copy of
            the starting policy, e.g. vLLM at real scale).
    """

    source_name = "engine"

    def __init__(
        self,
        engine: Any,
        render: Callable[[str], str],
        type: str = "abstract",
        explain_template: str = TINY_EXPLAIN,
        hint_templates: Mapping[str, str | None] | None = None,
        leak_filter: LeakCheck | None = None,
        max_attempts: int = 3,
        explain_max_new_tokens: int = 96,
        hint_max_new_tokens: int = 48,
        temperature: float = 0.0,
        retry_temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int = 0,
        model_name: str | None = None,
        source: str | None = None,
    ) -> None:
        self.type = check_hint_type(type, "generated hints")
        if source is not None:
            self.source_name = source
        if max_attempts < 1:
            raise NudgekitError(f"hints: max_attempts must be >= 1, got {max_attempts}")
        templates = (
            dict(hint_templates) if hint_templates is not None else {"abstract": TINY_ABSTRACT}
        )
        self.template = templates.get(self.type)
        if self.type == "abstract" and not self.template:
            raise NudgekitError("generated hints: type 'abstract' needs hint_templates.abstract")
        self.engine, self.render, self.explain_template = engine, render, explain_template
        self.leak_filter, self.max_attempts = leak_filter, max_attempts
        self.explain_max_new_tokens, self.hint_max_new_tokens = (
            explain_max_new_tokens,
            hint_max_new_tokens,
        )
        self.temperature, self.retry_temperature, self.top_p = temperature, retry_temperature, top_p
        self.stop, self.seed, self.model_name = list(stop), seed, model_name
        self._explanations: dict[str, str] = {}

    # ------------------------------------------------------------------ generation

    def _sample(
        self, prompts: list[str], keys: list[str], attempt: int, stage: str, max_new_tokens: int
    ) -> list[Candidate]:
        temperature = self.temperature if attempt == 0 else self.retry_temperature
        requests = [
            GenerationRequest(
                prompt=text,
                n=1,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=self.top_p,
                stop=self.stop,
                seed=attempt_seed(self.seed, key, attempt, stage),
            )
            for text, key in zip(prompts, keys)
        ]
        results = self.engine.generate(requests) if requests else []
        return [
            (r.samples[0].text.strip(), r.samples[0].finish_reason == "length") for r in results
        ]

    def _explain(self, problems: list[Problem], attempt: int) -> dict[str, Candidate]:
        prompts = [
            self.render(fill_template(self.explain_template, question=p.question, answer=p.answer))
            for p in problems
        ]
        made = self._sample(
            prompts, [p.id for p in problems], attempt, "explain", self.explain_max_new_tokens
        )
        for p, (text, _) in zip(problems, made):
            self._explanations[p.id] = text
        return dict(zip([p.id for p in problems], made))

    def _needs_explanation(self) -> bool:
        if self.template is not None:
            return "{explanation}" in self.template
        return self.type in ("partial", "full")

    def generate_round(self, problems: list[Problem], attempt: int) -> dict[str, Candidate]:
        """One round of candidates for `problems` (see the module docstring)."""
        derived = self.template is None
        expl: dict[str, Candidate] = {}
        if self._needs_explanation():
            fresh = [p for p in problems if derived or p.id not in self._explanations]
            expl = self._explain(fresh, attempt) if fresh else {}
        if derived:
            return {p.id: self._derive(p, expl.get(p.id, ("", False))) for p in problems}
        prompts = [
            self.render(
                fill_template(
                    self.template,
                    question=p.question,
                    answer=p.answer,
                    explanation=self._explanations.get(p.id, ""),
                )
            )
            for p in problems
        ]
        made = self._sample(
            prompts, [p.id for p in problems], attempt, "hint", self.hint_max_new_tokens
        )
        return dict(zip([p.id for p in problems], made))

    def _derive(self, problem: Problem, explanation: Candidate) -> Candidate:
        text, truncated = explanation
        if self.type == "answer":
            return f"The answer is {problem.answer}.", False
        if self.type == "partial":
            return first_half(text), truncated
        return text, truncated  # full

    # ------------------------------------------------------------------ collection

    def collect(self, problems: Sequence[Problem]) -> HintCollection:
        """Write, filter and regenerate hints for every problem (see the module docstring)."""
        with self._running_engine():
            return self._collect(problems)

    @contextlib.contextmanager
    def _running_engine(self) -> Iterator[None]:
        """Build the engine from its factory for one collection, then release it."""
        given = self.engine
        if given is None or hasattr(given, "generate"):
            yield
            return
        self.engine = given()
        try:
            yield
        finally:
            built, self.engine = self.engine, given
            close = getattr(built, "close", None)
            if callable(close):
                close()  # vLLM frees its weights and KV cache
            del built, close
            free_memory()

    def _collect(self, problems: Sequence[Problem]) -> HintCollection:
        self._explanations = {}

        def check(problem: Problem, hint: str) -> str | None:
            if self.leak_filter is None:
                return None if hint.strip() else "empty"
            return self.leak_filter(hint, problem.answer, self.type)

        accepted, out = collect_with_retries(
            problems, self.generate_round, check, self.max_attempts
        )
        for p in problems:
            if p.id in accepted:
                hint, attempts, rejections = accepted[p.id]
                out.records.append(
                    HintRecord(
                        id=p.id,
                        hint=hint,
                        type=self.type,
                        source=self.source_name,
                        attempts=attempts,
                        rejections=list(rejections),
                        model=self.model_name,
                        explanation=self._explanations.get(p.id),
                    )
                )
        return out


class SelfHints(EngineHints):
    """Hints written by the policy itself (the paper's default `self` source).

    Args:
        model: the policy's `ModelSpec` (its tokenizer's chat template renders the prompts).
        max_batch_size: rows decoded at once by the in-process hf engine.
        system: optional system turn.
        engine: factory of the engine used when no trainer lends one (`bind`), e.g. vLLM for
            `pipeline=hints` at real scale (None: hf over `model`); built per `collect`, released.
        **kwargs: everything `EngineHints` takes except `engine`, `render` and `model_name`.
    """

    source_name = "self"

    def __init__(
        self,
        model: Any,
        max_batch_size: int = 64,
        system: str | None = None,
        engine: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.model_spec, self.max_batch_size = model, max_batch_size
        self.engine_factory = engine
        super().__init__(
            engine=None,
            render=ChatRenderer(model, system=system),
            model_name=str(getattr(model, "name_or_path", model)),
            **kwargs,
        )

    def bind(self, engine: Any, tokenizer: Any) -> None:
        """Write hints with a running engine over the policy (the trainer's) and its tokenizer."""
        self.engine = engine
        self.render._tokenizer = tokenizer

    def collect(self, problems: Sequence[Problem]) -> HintCollection:
        if self.engine is not None:  # bound: the trainer's engine, not ours to release
            return super().collect(problems)
        from nudgekit.engines.hf import HFEngine

        self.engine = self.engine_factory or functools.partial(
            HFEngine, self.model_spec, max_batch_size=self.max_batch_size
        )
        try:
            return super().collect(problems)
        finally:
            self.engine = None


def free_memory() -> None:
    """Collect dropped objects now (a released engine's model) and return cached GPU memory."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
