"""Starting, feeding and closing one W&B run, quietly and without a network when offline.

What this adds over a bare `wandb.init` (checked against wandb 0.31):

- ``reinit="create_new"``: several runs may exist in one process (a Hydra multirun executes its
  jobs sequentially in one process; each job gets its own run and the previous one is untouched);
- ``silent=True`` and ``console="off"``: W&B prints nothing and does not wrap stdout/stderr, which
  would otherwise fight with Hydra's log handlers and pytest's capture. Both are overridable via
  the tracker's ``settings``;
- the run directory exists before `wandb.init`, so W&B finds git metadata instead of warning
  that the "git root does not exist";
- ``sys.argv`` is redacted while the run starts, because W&B copies the command line into its run
  metadata and a Hydra override such as ``tracking.api_key=...`` would otherwise be stored (name,
  tags, group and config come in already redacted from the tracker);
- offline runs switch off W&B's own usage telemetry, which otherwise still probes the server;
- `finish_run` returns only once the ``.wandb`` file is on disk (bare ``Run.finish`` does not);
- W&B failures (no API key online, no network) become one-line `NudgekitError`s.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.tracking.redact import redact_argv
from nudgekit.tracking.values import to_wandb

DEFAULT_SETTINGS: dict[str, Any] = {"silent": True, "console": "off"}
# What wandb-core writes to a run's debug-internal.log once its .wandb file is closed.
_STREAM_CLOSED_LINE = "stream: all finished"

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _redacted_argv(secrets: Iterable[str] = ()) -> Iterator[None]:
    saved = sys.argv
    sys.argv = saved[:1] + redact_argv(saved[1:], secrets=secrets)
    try:
        yield
    finally:
        sys.argv = saved


def start_run(
    run_dir: Path,
    mode: str,
    project: str,
    config: Mapping[str, Any],
    name: str | None = None,
    tags: list[str] | None = None,
    group: str | None = None,
    settings: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
) -> Any:
    """Start a W&B run whose files live under ``run_dir/wandb/``.

    Args:
        run_dir: the run directory (created if missing).
        mode: ``online`` or ``offline``.
        project: W&B project.
        config: the already redacted config.
        name: run display name.
        tags: run tags.
        group: run group (e.g. one sweep).
        settings: extra ``wandb.Settings`` fields, overriding `DEFAULT_SETTINGS`.
        secrets: credential values to scrub from the command line W&B records.

    Returns:
        The ``wandb.Run``.

    Raises:
        NudgekitError: when W&B cannot start (bad settings, no API key online, no network).
    """
    import wandb  # lazily: importing wandb is slow and disabled mode never needs it

    run_dir.mkdir(parents=True, exist_ok=True)
    if mode == "offline":
        _disable_wandb_analytics()
    try:
        wb_settings = wandb.Settings(**{**DEFAULT_SETTINGS, **dict(settings or {})})
    except Exception as e:
        # pydantic puts the offending field on the 2nd line: keep three lines, joined into one.
        detail = "; ".join(line.strip() for line in str(e).splitlines()[:3])
        raise NudgekitError(f"tracking.settings: invalid W&B setting ({detail})") from e
    try:
        with _redacted_argv(secrets):
            return wandb.init(
                dir=str(run_dir),
                mode=mode,
                project=project,
                name=name,
                tags=tags,
                group=group,
                config=dict(config),
                settings=wb_settings,
                reinit="create_new",
            )
    except wandb.errors.Error as e:
        hint = " (set WANDB_API_KEY or use tracking.mode=offline)" if mode == "online" else ""
        raise NudgekitError(
            f"tracking: W&B {mode} run failed to start: {_first_line(e)}{hint}"
        ) from e


def finish_run(run: Any, exit_code: int = 0, flush_timeout_s: float = 5.0) -> None:
    """Finish a run and wait until W&B has written its ``.wandb`` file.

    ``Run.finish`` (wandb 0.31) only *publishes* the final "finish" message to wandb-core and
    returns; core closes the run's stream, and flushes the ``.wandb`` file, a moment later
    (the file can still be a bare header right after ``finish``). We
    poll core's per-run log for the line it writes once the stream is closed, so that whoever
    reads or syncs the run after `Tracker.finish` sees all of it. If the line never comes (a
    future wandb wording), we give up after ``flush_timeout_s``: at worst a short delay.

    Args:
        run: the ``wandb.Run``.
        exit_code: non-zero marks the run failed.
        flush_timeout_s: longest wait for the flush.
    """
    run.finish(exit_code=exit_code)
    log_path = Path(run.settings.log_internal)
    deadline = time.monotonic() + flush_timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if _STREAM_CLOSED_LINE in log_path.read_text(encoding="utf-8", errors="replace"):
                return
        time.sleep(0.01)
    logger.debug(
        "tracking: no %r in %s after %.1fs", _STREAM_CLOSED_LINE, log_path, flush_timeout_s
    )


def _disable_wandb_analytics() -> None:
    """Stop W&B's own usage telemetry, which it means to skip offline but does not.

    wandb 0.31 records init telemetry through a process-wide recorder built from the global
    settings (not the run's ``mode``), whose exporter thread POSTs to the W&B server even for an
    offline run (seen with strace; it delays the exit, up to its 10 s HTTP timeout where packets
    are silently dropped). Process-wide, and only W&B's own analytics
    (never run data). Absent in other wandb versions: then a no-op.
    """
    try:
        from wandb.analytics.opentelemetry import opentelemetry_proxy
    except ImportError:
        return
    disable = getattr(opentelemetry_proxy, "disable", None)
    if callable(disable):
        disable()


def make_table(rows: list[Mapping[str, Any]], columns: list[str], max_rows: int) -> Any:
    """Build a ``wandb.Table`` from row dicts (missing cells are None; types may mix).

    Args:
        rows: the rows, already redacted.
        columns: column order.
        max_rows: rows beyond this are left out of W&B (the JSONL mirror keeps them all).

    Returns:
        The table.
    """
    import wandb

    data = [[to_wandb(row.get(c)) for c in columns] for row in rows[:max_rows]]
    return wandb.Table(columns=columns, data=data, allow_mixed_types=True)


def table_row_limit() -> int:
    """How many rows W&B shows for a logged table (it truncates beyond this)."""
    import wandb

    return int(wandb.Table.MAX_ROWS)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
