"""`launch(main)`: run the ``@hydra.main`` entry point with nudgekit's error contract.

Hydra reports its own errors (an unknown config group option, an override of a key that does
not exist, bad override syntax) as several lines and exit code 1. Under `launch` they become
one line, ``error: ...``, and exit code 2, like every other user error (`nudgekit.cli.run`
already handles those raised inside the task). Bugs keep their traceback and exit code 1, with
Hydra's frames stripped as Hydra does, and every credential value (environment, secret-named
overrides) scrubbed from the text. ``--help``, ``--cfg``, ``-m`` and the rest of Hydra's command
line are untouched.

How: Hydra prints and exits unless ``HYDRA_FULL_ERROR=1``, in which case it re-raises, so
`launch` sets that variable while `main` runs and reports the exception itself. A user who sets
``HYDRA_FULL_ERROR=1`` gets Hydra's unfiltered behaviour.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

from hydra.errors import (
    CompactHydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import OmegaConfBaseException

from nudgekit.tracking.hydra_files import scrub_command_line_secrets

FULL_ERROR = "HYDRA_FULL_ERROR"
_SET_BY_LAUNCH = "NUDGEKIT_LAUNCH_SET_HYDRA_FULL_ERROR"
USER_ERROR_EXIT = 2
BUG_EXIT = 1


def launch(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; exit 2 with one line on a config error, 1 on a bug.

    Args:
        main: the decorated entry point (it parses ``sys.argv`` itself).
    """
    if os.environ.get(FULL_ERROR) == "1" and os.environ.get(_SET_BY_LAUNCH) != "1":
        main()
        return
    # the marker tells a nested `run.py` (a child inherits the environment) it was not the user
    os.environ.update({FULL_ERROR: "1", _SET_BY_LAUNCH: "1"})
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - every failure is reported here, once
        _report(exc)
    finally:
        os.environ.pop(FULL_ERROR, None)
        os.environ.pop(_SET_BY_LAUNCH, None)


def error_line(exc: BaseException) -> str | None:
    """The one-line message for a user error (config, override, input), None for a bug.

    Args:
        exc: what `main` raised.

    Returns:
        The message without the ``error:`` prefix, or None when `exc` is a bug.
    """
    from nudgekit.runtime import find_user_error  # local: torch stays unimported for --help

    user_error = find_user_error(exc)
    if user_error is not None:
        return str(user_error)
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override '{exc.override}': {_lines(exc.message)[0]}"
    if isinstance(exc, MissingConfigException):
        options = f" (available: {', '.join(exc.options)})" if exc.options else ""
        return f"{_lines(str(exc))[0]}{options}"
    if isinstance(exc, CompactHydraException) and not isinstance(exc, InstantiationException):
        line = " ".join(_lines(str(exc)))
        if isinstance(exc.__cause__, OmegaConfBaseException):
            line += f" ({_lines(str(exc.__cause__))[0]})"
        return line
    return None


def _report(exc: Exception) -> None:
    line = error_line(exc)
    if line is not None:
        print(f"error: {scrub_command_line_secrets(line, sys.argv[1:])}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    text = "".join(traceback.format_exception(type(exc), exc, _task_frames(exc.__traceback__)))
    sys.stderr.write(scrub_command_line_secrets(text, sys.argv[1:]))
    sys.stderr.write(f"\nSet the environment variable {FULL_ERROR}=1 for a complete stack trace.\n")
    sys.exit(BUG_EXIT)


def _task_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the frame after Hydra's ``run_job`` on (all of it if there is none)."""
    cursor = tb
    while cursor is not None:
        if cursor.tb_frame.f_code.co_name == "run_job":
            return cursor.tb_next or tb
        cursor = cursor.tb_next
    return tb


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()] or [text]
