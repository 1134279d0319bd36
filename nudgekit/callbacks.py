"""`RunGuard`: the Hydra callback (``conf/hydra/default.yaml``) that protects a run's directory.

Hydra writes into the run dir and prints the overrides before and after the task function runs,
out of reach of `nudgekit.cli.run`; this callback covers those moments:

- ``on_run_start`` takes the run-dir lock (`nudgekit.rundir`) before Hydra writes
  ``.hydra/`` or the job log, so a second run into a busy dir stops with one line and leaves
  the first run's files alone (a multirun's job dirs are new per sweep; `cli.run` locks them);
- ``on_job_start`` rewrites ``.hydra/*.yaml`` (and a multirun's ``multirun.yaml``) redacted and
  makes the job's log handlers scrub secret values (`nudgekit.tracking.hydra_files`);
- ``on_job_end`` redacts the override list Hydra prints as "Error executing job with overrides"
  when the job failed with a bug;
- ``on_run_end`` releases the lock (the OS releases it anyway when the process exits).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nudgekit.errors import NudgekitError
from nudgekit.rundir import lock_run_dir, unlock_run_dir
from nudgekit.tracking.hydra_files import (
    install_log_scrubber,
    redact_hydra_dir,
    redact_or_remove,
    redact_overrides,
    run_secrets,
    task_overrides,
)


class RunGuard(Callback):
    """Lock the run dir, and keep secrets out of Hydra's files, log and failure line."""

    def __init__(self) -> None:
        self._locked: str | None = None
        self._secrets: tuple[str, ...] = ()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = _select(config, "hydra.run.dir")
        if run_dir is None:
            return
        try:
            took = lock_run_dir(run_dir)
        except NudgekitError as err:
            # Hydra turns a callback's exception into a warning and carries on: exit here.
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        if took:
            self._locked = run_dir

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._locked is not None:
            unlock_run_dir(self._locked)
            self._locked = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._secrets = run_secrets(config)
        overrides = task_overrides(config)
        output_dir = Path(str(config.hydra.runtime.output_dir))
        subdir = config.hydra.output_subdir
        if subdir is not None:
            redact_hydra_dir(output_dir / str(subdir), self._secrets, overrides)
        sweep_dir = _select(config, "hydra.sweep.dir")
        if config.hydra.mode == RunMode.MULTIRUN and sweep_dir is not None:
            redact_or_remove(Path(sweep_dir) / "multirun.yaml", self._secrets, overrides)
        install_log_scrubber(self._secrets)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if job_return is not None:
            job_return.overrides = redact_overrides(job_return.overrides, self._secrets)


def _select(config: DictConfig, key: str) -> str | None:
    try:
        value = OmegaConf.select(config, key)
    except OmegaConfBaseException:  # e.g. ${hydra:...} before Hydra set its config
        return None
    return None if value is None else str(value)
