"""`PlateauDetector`: is a metric flat for N consecutive evaluations?

NuRL's stage 1 runs plain GRPO "until convergence" (training reward and validation accuracy flat
for N evaluations, N=10 in the paper); the GRPO trainer uses the same component to stop early and
NuRL's stage switch reuses it. Departure from the paper: "flat" is made precise as *no new best by
more than `min_delta`* for `patience` consecutive evaluations (the rule of Lightning's
`EarlyStopping`), which is robust to the noise of small validation sets. Its state is a plain
dict, so it lives in checkpoints.
"""

from __future__ import annotations

import math
from typing import Literal


class PlateauDetector:
    """Track one metric; `update` returns True once it has plateaued.

    Args:
        patience: evaluations without improvement that make a plateau (the paper's N).
        min_delta: an improvement must beat the best value by more than this.
        mode: "max" (higher is better) or "min".
        metric: the metric name this detector watches (informational, used by trainers).
    """

    def __init__(
        self,
        patience: int = 10,
        min_delta: float = 0.0,
        mode: Literal["max", "min"] = "max",
        metric: str = "val/pass@1",
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience, self.min_delta, self.mode, self.metric = patience, min_delta, mode, metric
        self.best = -math.inf if mode == "max" else math.inf
        self.best_step: int | None = None
        self.bad_evals = 0
        self.plateau_step: int | None = None
        self.history: list[tuple[int, float]] = []

    @property
    def plateaued(self) -> bool:
        return self.plateau_step is not None

    def improved(self, value: float) -> bool:
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float, step: int | None = None) -> bool:
        """Record one evaluation; returns whether the metric has plateaued (sticky once True)."""
        step = len(self.history) if step is None else int(step)
        value = float(value)
        self.history.append((step, value))
        if self.improved(value):
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        if self.plateau_step is None and self.bad_evals >= self.patience:
            self.plateau_step = step
        return self.plateaued

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "plateau_step": self.plateau_step,
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.best_step = state["best_step"]
        self.bad_evals = int(state["bad_evals"])
        self.plateau_step = state["plateau_step"]
        self.history = [(int(s), float(v)) for s, v in state["history"]]
