"""What a GRPO run records as it trains: validation, the plateau detector, the summary metrics.

The trainer's `history` holds the run's summary metrics (the latest validation, the initial
pass@1, the plateau step, what a schedule `record`s, the training time); it is saved in every
checkpoint and becomes the run's final metrics, with the step count, the peak RSS and the
hooks' own final metrics.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nudgekit.rl.stats import peak_rss_mb
from nudgekit.rl.validation import table_rows, validate

log = logging.getLogger(__name__)


def validating(trainer: Any) -> bool:
    """Whether `trainer` validates at all (validation problems and a cadence)."""
    return bool(trainer.val_problems) and trainer.validation.every > 0


def on_start(trainer: Any, tracker: Any) -> None:
    """Before the first step of a fresh run: the initial validation, seen by the plateau."""
    if trainer.step == 0 and validating(trainer):
        initial = run_validation(trainer, tracker)
        trainer.history["val/pass@1_initial"] = initial["val/pass@1"]
        update_plateau(trainer, initial)


def on_step(trainer: Any, tracker: Any, metrics: dict[str, float]) -> None:
    """After a step: validation at its cadence (into `metrics`), the plateau detector, then the
    step's metrics to the tracker."""
    if validating(trainer) and trainer.step % trainer.validation.every == 0:
        metrics.update(run_validation(trainer, tracker, log_metrics=False))
    update_plateau(trainer, metrics)
    if tracker is not None:
        tracker.log(metrics, step=trainer.step)


def on_end(trainer: Any, tracker: Any, start: float) -> None:
    """After the last step: validate the final policy unless that step just did; add the
    training time since `start` (`time.perf_counter()`) to `perf/train_s`."""
    if validating(trainer) and trainer.history.get("val/step") != trainer.step:
        run_validation(trainer, tracker)
    elapsed = time.perf_counter() - start
    trainer.history["perf/train_s"] = trainer.history.get("perf/train_s", 0.0) + elapsed


def run_validation(trainer: Any, tracker: Any, log_metrics: bool = True) -> dict[str, float]:
    """pass@1 on the validation problems (sharded over ranks), kept in the history; logs the
    metrics (unless the caller logs them with the step's) and a sample table.
    """
    v, s = trainer.validation, trainer.sampling
    metrics, records = validate(
        trainer.engine,
        trainer.backend,
        trainer.val_problems,
        trainer.prompt,
        trainer.verifier,
        n=v.n,
        max_new_tokens=s.max_new_tokens,
        temperature=v.temperature,
        top_p=s.top_p,
        stop=s.stop,
        seed=trainer.seed,
    )
    trainer.history.update(metrics)
    trainer.history["val/step"] = trainer.step
    if tracker is not None:
        if log_metrics:
            tracker.log(metrics, step=trainer.step)
        tracker.log_table("val/samples", table_rows(records, v.table_rows), step=trainer.step)
    return metrics


def update_plateau(trainer: Any, metrics: dict[str, float]) -> None:
    """Feed the step's metrics to the plateau detector; record the step it first fires at."""
    plateau = trainer.plateau
    if plateau is None:
        return
    if plateau.observe(metrics, trainer.step) and "train/plateau_step" not in trainer.history:
        trainer.history["train/plateau_step"] = trainer.step
        log.info("grpo: %s plateaued at step %d", plateau.metrics, trainer.step)


def final_metrics(trainer: Any) -> dict[str, float]:
    """The history, the step count, the peak RSS and every hook's final metrics."""
    out = {k: float(v) for k, v in trainer.history.items() if v is not None}
    out["train/steps"] = float(trainer.step)
    out["perf/peak_rss_mb"] = peak_rss_mb()
    for hook in trainer.hooks:
        out.update(hook.final_metrics())
    return out
