"""Evaluation samples written by a nudging decoder instead of a single engine.

`EvalPipeline` hands its problems here when it is given a `decoder`: the eval engine is the
*base* model, a second engine is built for the small *nudging* model (the hf engine over its
`ModelSpec`, or `nudging_engine`, a partial engine called with that model as in
`nudgekit.nudging.roles`), and the decoder
(`CachedNudgingDecoder` / `ChunkedNudgingDecoder`, used only through their public
`decode(base_prompts, nudging_prompts)`) writes every sample. Everything after generation
(verifying, pass@k, reports) is the ordinary eval path, so a nudged model is scored exactly like
any other. The summary adds the decoder's attribution statistics (`run_stats`) under
`nudging/`.

Sampling: the eval's `temperature` and `top_p` are passed to both models (they override the
decoder config's `base_temperature` / `nudging_temperature`), so `eval.temperature=0` is greedy
nudging (n must be 1) and `eval.temperature>0` draws `n` different collaborative answers per
problem. All `n * problems` answers are decoded in one call, sample `j` of problem `i` as
question `i * n + j`, so each has its own seeded random stream and results do not depend on the
decoder's batch size (up to floating-point rounding, see `nudgekit.nudging.cached`). The eval's
`stop` strings are not used: the decoder stops on its own rules (end of turn, repeated nudging
words, rounds, length), recorded as each sample's `finish_reason`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError
from nudgekit.nudging.attribution import run_stats
from nudgekit.nudging.roles import RoleEngines

log = logging.getLogger(__name__)


class NudgedSampler:
    """`n` collaborative answers per problem from a base engine and a nudging model.

    Args:
        base: the base model's engine (needs `.model` / `.tokenizer` for the cached decoder).
        nudging: `ModelSpec` of the nudging model (loaded when `sample` is called).
        decoder: a partial decoder class, called with `base`, `nudging`, `max_new_tokens`,
            `seed`, `base_temperature`, `nudging_temperature` and `top_p`.
        base_prompt: renders a problem for the base model.
        nudging_prompt: renders a problem for the nudging model.
        batch_size: rows per forward of the nudging model's engine.
        nudging_engine: partial engine for the nudging model (None: the hf engine), e.g. an
            `OpenAIEngine` with the `base_url` of the server that serves it.
    """

    def __init__(
        self,
        base: Any,
        nudging: Any,
        decoder: Callable[..., Any],
        base_prompt: Callable[[Problem], str],
        nudging_prompt: Callable[[Problem], str],
        batch_size: int = 16,
        nudging_engine: Callable[..., Any] | None = None,
    ) -> None:
        if nudging is None or nudging_prompt is None:
            raise NudgekitError(
                "eval: a nudging decoder needs pipeline.nudging (a model) and pipeline.nudging_prompt"
            )
        self.base, self.nudging_spec, self.decoder = base, nudging, decoder
        self.base_prompt, self.nudging_prompt = base_prompt, nudging_prompt
        self.batch_size, self.nudging_engine = batch_size, nudging_engine
        self.seconds = 0.0  # wall time of the last `sample` call's decoding
        self.stats: dict[str, float] = {}  # the last call's attribution statistics (run_stats)

    def _nudging_engine(self) -> Any:
        roles = RoleEngines(
            {"nudging": self.nudging_spec}, self.nudging_engine, None, self.batch_size
        )
        return roles.build("nudging")

    def sample(
        self,
        problems: Sequence[Problem],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> tuple[list[str], list[list[Any]]]:
        """Base prompts and `n` `NudgeOutput`s per problem (in problem order)."""
        base_prompts = [self.base_prompt(p) for p in problems]
        nudging_prompts = [self.nudging_prompt(p) for p in problems]
        decoder = self.decoder(
            base=self.base,
            nudging=self._nudging_engine(),
            max_new_tokens=max_new_tokens,
            seed=seed,
            base_temperature=temperature,
            nudging_temperature=temperature,
            top_p=top_p,
        )
        start = time.perf_counter()
        outputs = decoder.decode(repeat(base_prompts, n), repeat(nudging_prompts, n), progress=True)
        self.seconds = time.perf_counter() - start
        self.stats = run_stats(outputs)
        log.info("eval: %d nudged answers in %.1fs", len(outputs), self.seconds)
        return base_prompts, [outputs[i * n : (i + 1) * n] for i in range(len(problems))]


def repeat(items: Sequence[str], n: int) -> list[str]:
    """Each item `n` times in a row: `[a, a, b, b]` for n=2 (sample j of item i at `i*n + j`)."""
    return [x for x in items for _ in range(n)]
