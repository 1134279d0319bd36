"""`PlateauDetector`: are the watched metrics all flat?

NuRL's stage 1 runs plain GRPO "until convergence": training reward and validation accuracy both
flat for N steps (the paper). `metrics` names what is watched (e.g. `train/reward` and
`val/pass@1`); a metric is *flat* once it has had no new best by more than `min_delta` for
`patience_steps` training steps (or, without `patience_steps`, for `patience` consecutive
observations: the rule of Lightning's `EarlyStopping`). `smooth` > 1 compares the moving mean of
the last `smooth` observations instead of the raw values (a per-step training reward is noisy).
The detector fires when every watched metric has been observed and is flat. The GRPO trainer uses
it to stop early and NuRL's stage switch reuses it. Its state is a plain dict, so it lives in
checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal


class _Track:
    """One metric: its observations, best (smoothed) value and when it last improved."""

    def __init__(self, mode: str) -> None:
        self.best = -math.inf if mode == "max" else math.inf
        self.best_step: int | None = None
        self.bad_evals = 0
        self.history: list[tuple[int, float]] = []

    def state(self) -> dict:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "history": [list(h) for h in self.history],
        }

    def load(self, state: dict) -> None:
        self.best, self.best_step = float(state["best"]), state["best_step"]
        self.bad_evals = int(state["bad_evals"])
        self.history = [(int(s), float(v)) for s, v in state["history"]]


class PlateauDetector:
    """Watch one or more metrics; `observe` returns True once all of them have plateaued.

    Args:
        patience: observations without improvement that make a metric flat (used when
            `patience_steps` is None).
        min_delta: an improvement must beat the best value by more than this.
        mode: "max" (higher is better) or "min".
        metric: the watched metric when `metrics` is not given.
        metrics: the watched metrics (all must be flat; the paper: train reward and validation).
        patience_steps: training steps without improvement that make a metric flat (the paper's
            N steps); None counts observations (`patience`) instead.
        smooth: compare the mean of the last `smooth` observations of each metric (1: raw).
    """

    def __init__(
        self,
        patience: int = 10,
        min_delta: float = 0.0,
        mode: Literal["max", "min"] = "max",
        metric: str = "val/pass@1",
        metrics: Sequence[str] | None = None,
        patience_steps: int | None = None,
        smooth: int = 1,
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if patience_steps is not None and patience_steps < 1:
            raise ValueError(f"patience_steps must be >= 1, got {patience_steps}")
        if smooth < 1:
            raise ValueError(f"smooth must be >= 1, got {smooth}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.metrics = [str(m) for m in metrics] if metrics else [metric]
        self.metric = self.metrics[0]
        self.patience_steps, self.smooth = patience_steps, smooth
        self.tracks = {m: _Track(mode) for m in self.metrics}
        self.plateau_step: int | None = None

    @property
    def plateaued(self) -> bool:
        return self.plateau_step is not None

    # single-metric views (the first watched metric), as before
    @property
    def best(self) -> float:
        return self.tracks[self.metric].best

    @property
    def best_step(self) -> int | None:
        return self.tracks[self.metric].best_step

    @property
    def history(self) -> list[tuple[int, float]]:
        return self.tracks[self.metric].history

    def improved(self, value: float, best: float) -> bool:
        if self.mode == "max":
            return value > best + self.min_delta
        return value < best - self.min_delta

    def _flat(self, track: _Track, step: int) -> bool:
        if not track.history:
            return False
        if self.patience_steps is None:
            return track.bad_evals >= self.patience
        return track.best_step is not None and step - track.best_step >= self.patience_steps

    def observe(self, values: Mapping[str, float], step: int) -> bool:
        """Record the watched metrics present in `values` at `step`; returns whether every
        watched metric is flat (sticky once True)."""
        step = int(step)
        for name, track in self.tracks.items():
            if name not in values:
                continue
            track.history.append((step, float(values[name])))
            recent = [v for _, v in track.history[-self.smooth :]]
            value = sum(recent) / len(recent)
            if self.improved(value, track.best):
                track.best, track.best_step, track.bad_evals = value, step, 0
            else:
                track.bad_evals += 1
        if self.plateau_step is None and all(self._flat(t, step) for t in self.tracks.values()):
            self.plateau_step = step
        return self.plateaued

    def update(self, value: float, step: int | None = None) -> bool:
        """Record one observation of the (first) watched metric."""
        step = len(self.history) if step is None else int(step)
        return self.observe({self.metric: value}, step)

    def state_dict(self) -> dict:
        return {
            "plateau_step": self.plateau_step,
            "tracks": {m: t.state() for m, t in self.tracks.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_step = state["plateau_step"]
        if "tracks" not in state:  # a single-metric checkpoint
            self.tracks[self.metric].load(state)
            return
        for name, track in self.tracks.items():
            if name in state["tracks"]:
                track.load(state["tracks"][name])
