"""Keep credentials out of what Hydra writes and prints for a run.

Hydra saves ``<run>/.hydra/{config,hydra,overrides}.yaml`` (and, for a multirun,
``<sweep>/multirun.yaml``) before the task starts, with every command-line value verbatim, logs
to ``<run>/<job>.log``, and prints ``Error executing job with overrides: [...]`` when a job
fails. `nudgekit.callbacks.RunGuard` calls the functions here at job start / end so that:

- the saved YAML files are rewritten (or, if that fails, deleted) with the same redaction as the tracker's ``config.yaml``
  (`redact`: by key name and by value) plus `redact_argv` for the override lists, and every
  secret-keyed ``key=value`` override text is replaced wherever it occurs (e.g. in
  ``hydra.job.override_dirname``); unresolved interpolations stay unresolved;
- the job's log handlers scrub secret values from every record (`ScrubFilter`);
- the failure line lists redacted overrides (`redact_overrides`).

The secrets are the credential values of the environment, the values passed under secret names
on the command line, and the values under secret keys of the composed config (`run_secrets`).
Files are rewritten only when redaction changes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nudgekit.tracking.files import write_atomic
from nudgekit.tracking.redact import (
    REDACTED,
    argv_secret_values,
    config_secret_values,
    is_secret_key,
    longest_first,
    redact_argv,
    scrub,
    secret_values,
)

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")

log = logging.getLogger(__name__)


def task_overrides(config: DictConfig) -> list[str]:
    """The job's command-line overrides (``hydra.overrides.task``) as plain strings."""
    node = OmegaConf.select(config, "hydra.overrides.task", default=None)
    # unresolved: an override such as `eval.n=${nope}` reads as an interpolation
    return [] if node is None else [str(o) for o in OmegaConf.to_container(node, resolve=False)]


def run_secrets(config: DictConfig) -> tuple[str, ...]:
    """Secret values for one job: environment, secret-named overrides, secret config keys.

    Args:
        config: the job's full config (with its ``hydra`` node); it is not resolved.

    Returns:
        The values, longest first (see `redact.longest_first`).
    """
    plain = OmegaConf.to_container(config, resolve=False)
    # an interpolation such as ${oc.env:OPENAI_API_KEY} is a reference, not a secret
    in_config = [v for v in config_secret_values(plain) if not _is_interpolation(v)]
    return longest_first(
        secret_values() + argv_secret_values(task_overrides(config)) + tuple(in_config)
    )


def scrub_command_line_secrets(text: str, argv: Sequence[str]) -> str:
    """Remove from `text` the secrets of the environment and of a command line.

    Args:
        text: e.g. an error message or a traceback that may quote an override.
        argv: the command line (``sys.argv[1:]``).

    Returns:
        `text` with secret-named ``key=value`` overrides shown as ``key=***`` and every secret
        value replaced by ``***``.
    """
    secrets = longest_first(secret_values() + argv_secret_values(argv))
    return scrub(_replace(text, override_replacements(argv)), secrets)


def override_replacements(overrides: Iterable[str]) -> dict[str, str]:
    """``key=value`` text of secret-named overrides -> its redacted form (any value length)."""
    overrides = list(overrides)
    redacted = redact_argv(overrides, environ={})
    return {
        raw: new
        for raw, new in zip(overrides, redacted, strict=True)
        if raw != new and new.endswith(f"={REDACTED}")
    }


def redact_overrides(overrides: Sequence[str] | None, secrets: Iterable[str]) -> list[str] | None:
    """Redact an override list (what Hydra prints as "Error executing job with overrides")."""
    if overrides is None:
        return None
    return redact_argv(list(overrides), secrets=secrets)


def redact_hydra_dir(directory: Path, secrets: Sequence[str], overrides: Sequence[str]) -> None:
    """Rewrite Hydra's saved YAML files in `directory` (``<run>/.hydra``) redacted.

    Args:
        directory: the folder holding ``config.yaml``, ``hydra.yaml``, ``overrides.yaml``.
        secrets: secret values to scrub from every string.
        overrides: the job's command-line overrides.
    """
    for name in HYDRA_FILES:
        redact_or_remove(directory / name, secrets, overrides)


def redact_or_remove(path: Path, secrets: Sequence[str], overrides: Sequence[str]) -> None:
    """`redact_yaml_file`, failing closed: a file that cannot be redacted is deleted (warned).

    Hydra's copies are a convenience; the run's own ``config.yaml`` is the redacted record.
    """
    try:
        redact_yaml_file(path, secrets, overrides)
    except Exception as err:  # noqa: BLE001 - never leave an unredacted copy behind
        path.unlink(missing_ok=True)
        log.warning("could not redact %s (%s: %s); removed it", path, type(err).__name__, err)


def redact_yaml_file(path: Path, secrets: Sequence[str], overrides: Sequence[str]) -> bool:
    """Rewrite one YAML file redacted, if it exists and redaction changes it.

    Args:
        path: the file (a mapping or a list of overrides).
        secrets: secret values to scrub from every string.
        overrides: the job's command-line overrides.

    Returns:
        Whether the file was rewritten.
    """
    if not path.is_file():
        return False
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = _redact_any(data, secrets, override_replacements(overrides))
    if clean == data:
        return False
    write_atomic(path, OmegaConf.to_yaml(OmegaConf.create(clean)))
    return True


def _redact_any(data: Any, secrets: Sequence[str], replacements: dict[str, str]) -> Any:
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        data = redact_argv(data, environ={}, secrets=secrets)  # an override list
    elif isinstance(data, dict):
        data = _redact_keys(_redact_override_lists(data, secrets))
    return scrub(_replace(data, replacements), secrets)


def _redact_keys(value: Any) -> Any:
    """Like `redact` by key name, but an interpolation (``${oc.env:KEY}``) is kept: no secret."""
    if isinstance(value, dict):
        return {k: REDACTED if _holds_secret(k, v) else _redact_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_keys(v) for v in value]
    return value


def _holds_secret(key: Any, value: Any) -> bool:
    if value is None or not is_secret_key(key):
        return False
    return not _is_interpolation(value)


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


def _redact_override_lists(data: dict, secrets: Sequence[str]) -> dict:
    """``hydra.overrides.{task,hydra}`` are ``key=value`` lists: redact them as a command line."""
    overrides = (data.get("hydra") or {}).get("overrides")
    if not isinstance(overrides, dict):
        return data
    new = {
        k: redact_argv(v, environ={}, secrets=secrets) if isinstance(v, list) else v
        for k, v in overrides.items()
    }
    return {**data, "hydra": {**data["hydra"], "overrides": new}}


def _replace(value: Any, replacements: dict[str, str]) -> Any:
    if not replacements:
        return value
    if isinstance(value, str):
        for raw, new in replacements.items():
            value = value.replace(raw, new)
        return value
    if isinstance(value, dict):
        return {k: _replace(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, replacements) for v in value]
    return value


class ScrubFilter(logging.Filter):
    """A handler filter that removes secret values from log messages and tracebacks.

    Args:
        secrets: the values to remove.
    """

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = scrub(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.secrets)
        return True


def install_log_scrubber(secrets: Sequence[str]) -> None:
    """Put a `ScrubFilter` on every root-logger handler (replacing an earlier one).

    Args:
        secrets: the values to remove from records.
    """
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, ScrubFilter)]:
            handler.removeFilter(old)
        handler.addFilter(ScrubFilter(secrets))
