"""`PassCurveEval`: pass@k at every power of two up to n, for the NuRL upper-limit question.

The paper's claim is about pass@k at large k (the model's "upper limit"): plain GRPO sharpens
pass@1 but leaves pass@k at large k where the base model was; NuRL raises it. This is the
evaluation pipeline with `k=None` meaning `1, 2, 4, ..., n` (derived from `n`, so `debug=tiny`,
which shrinks n, stays valid). As in every evaluation, prompts never carry a hint.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from nudgekit.eval.pipeline import EvalPipeline


def powers_of_two(n: int) -> list[int]:
    """1, 2, 4, ... up to n, plus n itself when it is not a power of two."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


class PassCurveEval(EvalPipeline):
    """`EvalPipeline` whose `k=None` (the default) is `powers_of_two(n)`.

    Args:
        *args, **kwargs: as `EvalPipeline`; `k` is a list or None.
    """

    def __init__(
        self, *args: Any, n: int = 256, k: Sequence[int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, n=n, k=powers_of_two(n) if k is None else k, **kwargs)


def _signature() -> inspect.Signature:
    params = inspect.signature(EvalPipeline).parameters.values()
    return inspect.Signature([p.replace(default=None) if p.name == "k" else p for p in params])


PassCurveEval.__signature__ = _signature()  # EvalPipeline's keys exactly (config validation)
