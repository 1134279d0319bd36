"""`run(cfg)`: build the pipeline a composed config names, run it, return the optimised metric.

The entry point (`run.py`) stays tiny; everything here is importable so tests can call `run(cfg)`
in-process on a composed config.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nudgekit.errors import NudgekitError
from nudgekit.rundir import locked_run_dir
from nudgekit.runtime import check_config, find_user_error, seed_everything, validate_targets

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """Run the configured pipeline; a user error becomes one line on stderr and exit code 2."""
    try:
        return _run(cfg)
    except Exception as exc:  # noqa: BLE001 - user errors are reported as one line, bugs re-raised
        user_error = find_user_error(exc)
        if user_error is None:
            raise
        log.error("%s", user_error)
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None


def output_dir(cfg: DictConfig) -> Path:
    """The run directory: Hydra's when Hydra launched us, else `paths.output_dir`."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def _run(cfg: DictConfig) -> float | None:
    check_config(cfg)
    if cfg.get("dry_run"):
        return dry_run(cfg)
    run_dir = output_dir(cfg)
    with locked_run_dir(run_dir):  # one run per run dir; created if missing
        return _run_locked(cfg, run_dir)


def _run_locked(cfg: DictConfig, run_dir: Path) -> float | None:
    seed_everything(int(cfg.seed))
    container = OmegaConf.to_container(cfg, resolve=True)
    tracker = instantiate(cfg.logger)(run_dir=str(run_dir), config=container)
    try:
        pipeline = instantiate(cfg.pipeline)
        metrics = pipeline.run(tracker=tracker, run_dir=run_dir) or {}
        tracker.summary(metrics)
    except Exception as exc:
        if find_user_error(exc) is None:  # a bug: keep the traceback in the run's log
            log.exception("pipeline %s failed; run dir: %s", cfg.pipeline.get("_target_"), run_dir)
        raise
    finally:
        tracker.finish()
    log.info("run dir: %s", run_dir)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


def dry_run(cfg: DictConfig) -> None:
    """Validate every `_target_` against its signature, run preflight checks, print the plan."""
    problems = validate_targets(cfg)
    if problems:
        raise NudgekitError("config does not bind: " + "; ".join(problems))
    print(OmegaConf.to_yaml(cfg, resolve=True))
    print("dry run: config resolved and every _target_ binds; nothing was loaded or trained.")
    return None
