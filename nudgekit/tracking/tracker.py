"""`Tracker`: experiment tracking to W&B plus a plain-file mirror that is always written.

One tracker per run. Everything it receives lands in the run directory first and in W&B second:

```
<run_dir>/
  config.yaml         resolved config, credentials redacted (written at construction)
  metrics.jsonl       one line per `log` call: {"step": s, "time": unix_s, **metrics}
  tables/<name>.jsonl one line per row per `log_table` call, with the table's "step"
  summary.json        final values from `summary`
  wandb/offline-run-* the W&B run (mode offline; upload later with `wandb sync <that dir>`)
```

Modes: ``offline`` (default: needs no network, no account), ``online``, ``disabled`` (no W&B at
all, not even imported; the files above are still written). Under ``torchrun`` only global rank 0
(env ``RANK``) tracks; other ranks get a tracker whose methods do nothing, so every rank may call
it unconditionally.

Departures from a bare `wandb.log`: steps are always explicit (``step=None`` means "previous step
+ 1"), so W&B and the mirror agree on step numbers; a step lower than one already sent to W&B is
written to the mirror but not to W&B (which would drop it), with a warning. Values are converted
by `values.to_jsonable` (tensors and numpy scalars become numbers, unknown objects their ``str``),
and credential values (from the environment, or under a secret key of the config) are scrubbed from
every string, including the W&B run's name, tags and group (`redact`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.rundir import is_main_process
from nudgekit.tracking import wandb_backend
from nudgekit.tracking.files import (
    JsonlFile,
    dump_json,
    dump_yaml,
    table_filename,
    write_atomic,
)
from nudgekit.tracking.redact import (
    config_secret_values,
    longest_first,
    redact,
    scrub,
    secret_values,
)
from nudgekit.tracking.values import to_jsonable, to_wandb

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
RESERVED_KEYS = ("step", "time")


class Tracker:
    """Log metrics, tables, config and summary to ``run_dir`` files and (optionally) W&B.

    Args:
        run_dir: directory of this run (created if missing).
        config: the resolved run config (plain mapping or OmegaConf); stored redacted.
        mode: ``offline`` (default), ``online`` or ``disabled``.
        project: W&B project.
        name: W&B run name.
        tags: W&B run tags.
        group: W&B run group (e.g. one sweep).
        settings: extra ``wandb.Settings`` fields (default: silent, no console capture).

    Raises:
        NudgekitError: bad mode, config that is not a mapping, or W&B failing to start.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any] | None = None,
        mode: str = "offline",
        project: str = "nudgekit",
        name: str | None = None,
        tags: list[str] | None = None,
        group: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise NudgekitError(f"tracking.mode: {mode!r} is not one of {', '.join(MODES)}")
        self.run_dir = Path(run_dir)
        self.mode = mode
        plain = _plain_config(config)
        self.config = redact(plain)
        self.active = is_main_process()
        self.wandb_run: Any = None
        # env credentials and values under secret config keys, scrubbed from everything logged
        self._secrets = longest_first(secret_values() + config_secret_values(plain))
        self._metrics = JsonlFile(self.run_dir / "metrics.jsonl")
        self._tables: dict[str, JsonlFile] = {}
        self._summary: dict[str, Any] = {}
        self._step = -1  # last step written; -1 before the first
        self._wandb_step = -1  # highest step sent to W&B, which rejects lower ones
        self._warned_step = False
        self._finished = False
        if not self.active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.run_dir / "config.yaml", dump_yaml(self.config))
        if mode != "disabled":
            self.wandb_run = wandb_backend.start_run(
                self.run_dir,
                mode,
                project,
                self.config,
                name=scrub(name, self._secrets),
                tags=scrub([str(t) for t in tags], self._secrets) if tags else None,
                group=scrub(group, self._secrets),
                settings=settings,
                secrets=self._secrets,
            )

    @property
    def wandb_dir(self) -> Path | None:
        """The W&B run directory (``run_dir/wandb/offline-run-*``), or None without W&B."""
        return Path(self.wandb_run.dir).parent if self.wandb_run is not None else None

    @property
    def step(self) -> int:
        """The last step logged (-1 before the first `log`)."""
        return self._step

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalar (or any) metrics at a step.

        Args:
            metrics: name -> value; names like ``train/reward``. The keys ``step`` and ``time``
                are reserved for the mirror and are dropped with a warning.
            step: the global step; None means the previous step + 1 (0 for the first call).
        """
        if not self._usable("log"):
            return
        step = self._resolve_step(step)
        clean = {str(k): v for k, v in metrics.items() if not self._is_reserved(k)}
        record = {"step": step, "time": round(time.time(), 3), **to_jsonable(clean)}
        self._metrics.write([scrub(record, self._secrets)])
        self._to_wandb(scrub(to_wandb(clean), self._secrets), step)

    def log_table(self, name: str, rows: list[Mapping[str, Any]], step: int | None = None) -> None:
        """Log a table of rows (e.g. prompt, completion, reward) at a step.

        Each call appends its rows to ``tables/<name>.jsonl`` (every row gets the table's
        ``step`` unless it has its own) and logs a ``wandb.Table`` under ``name``. Columns are the
        union of the rows' keys in first-seen order. W&B shows at most ``wandb.Table.MAX_ROWS``
        rows per table; the JSONL file keeps all of them.

        Args:
            name: table name (``eval/samples``); the file name replaces unsafe characters by ``_``.
            rows: the rows.
            step: the step the table belongs to; None means the last logged step (0 before any).

        Raises:
            NudgekitError: a name with no usable characters.
        """
        filename = table_filename(name)
        if not self._usable("log_table") or not rows:
            return
        step = int(step) if step is not None else max(self._step, 0)
        clean = [scrub(to_jsonable(dict(row)), self._secrets) for row in rows]
        columns = list(dict.fromkeys(k for row in clean for k in row))
        stream = self._tables.get(name)
        if stream is None:
            stream = self._tables[name] = JsonlFile(self.run_dir / "tables" / filename)
        stream.write([{"step": step, **row} for row in clean])
        if self.wandb_run is not None:
            limit = wandb_backend.table_row_limit()
            if len(clean) > limit:
                log.warning(
                    "tracking: table %r has %d rows; W&B gets the first %d", name, len(clean), limit
                )
            self._to_wandb({name: wandb_backend.make_table(clean, columns, limit)}, step)

    def summary(self, metrics: Mapping[str, Any]) -> None:
        """Set final summary values (merged into ``summary.json`` and the W&B run summary).

        Args:
            metrics: name -> value, e.g. ``{"eval/pass@1": 0.41}``.
        """
        if not self._usable("summary"):
            return
        self._summary.update(scrub(to_jsonable(dict(metrics)), self._secrets))
        write_atomic(self.run_dir / "summary.json", dump_json(self._summary))
        if self.wandb_run is not None:
            self.wandb_run.summary.update(scrub(to_wandb(dict(metrics)), self._secrets))

    def finish(self, exit_code: int = 0) -> None:
        """Close the files and the W&B run. Safe to call more than once.

        Args:
            exit_code: non-zero marks the W&B run as failed.
        """
        if self._finished:
            return
        self._finished = True
        self._metrics.close()
        for stream in self._tables.values():
            stream.close()
        if self.wandb_run is not None:
            wandb_backend.finish_run(self.wandb_run, exit_code=exit_code)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    def _usable(self, method: str) -> bool:
        if self._finished:
            raise RuntimeError(f"Tracker.{method} called after finish()")
        return self.active

    def _resolve_step(self, step: int | None) -> int:
        step = self._step + 1 if step is None else int(step)
        if step < 0:
            raise ValueError(f"Tracker.log: step must be >= 0, got {step}")
        self._step = max(self._step, step)
        return step

    def _is_reserved(self, key: Any) -> bool:
        if key in RESERVED_KEYS:
            log.warning("tracking: metric name %r is reserved for the mirror; dropped", key)
            return True
        return False

    def _to_wandb(self, data: dict[str, Any], step: int) -> None:
        if self.wandb_run is None:
            return
        if step < self._wandb_step:
            if not self._warned_step:
                log.warning(
                    "tracking: step %d < %d already sent to W&B; mirror-only from now "
                    "on for such steps",
                    step,
                    self._wandb_step,
                )
                self._warned_step = True
            return
        self._wandb_step = step
        self.wandb_run.log(data, step=step)


def _plain_config(config: Any) -> dict[str, Any]:
    """The config as a plain JSON-like dict (OmegaConf configs resolved)."""
    from omegaconf import DictConfig, OmegaConf

    if config is None:
        return {}
    if isinstance(config, DictConfig):
        try:
            config = OmegaConf.to_container(config, resolve=True, throw_on_missing=False)
        except Exception as e:  # an interpolation that cannot resolve names its key
            raise NudgekitError(f"tracking: cannot resolve config: {str(e).splitlines()[0]}") from e
    if not isinstance(config, Mapping):
        raise NudgekitError(f"tracking: config must be a mapping, got {type(config).__name__}")
    return to_jsonable(config, finite_only=False)
