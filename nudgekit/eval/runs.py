"""Reading finished runs back: the run-dir files every pipeline writes, for notebooks and reports.

A run dir holds `config.yaml`, `metrics.jsonl`, `summary.json`, `tables/<name>.jsonl` and the
pipeline's own files (`samples.jsonl` for eval, `nudging.jsonl` for nudging). Notebooks name
their inputs by environment variables and fall back to the newest matching run under
`outputs/`, so the same notebook shows a fresh `debug=tiny` run in the tests and a full run by
hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nudgekit.errors import NudgekitError
from nudgekit.tracking.files import read_jsonl, table_filename

__all__ = [
    "find_runs",
    "pass_curve",
    "read_config",
    "read_jsonl",
    "read_metrics",
    "read_summary",
    "read_table",
    "repo_root",
    "runs_from_env",
    "sweep_of",
]


def read_summary(run_dir: Path | str) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def read_config(run_dir: Path | str) -> dict[str, Any]:
    """The run's resolved config (`config.yaml`, secrets redacted)."""
    config = OmegaConf.load(Path(run_dir) / "config.yaml")
    return OmegaConf.to_container(config, resolve=False) or {}


def read_metrics(run_dir: Path | str) -> list[dict]:
    """`metrics.jsonl`: one dict per `tracker.log` call, each with its `step`."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def read_table(run_dir: Path | str, name: str) -> list[dict]:
    """The rows of the tracker table `name` (e.g. "nurl/hint_decisions"); [] if never logged."""
    path = Path(run_dir) / "tables" / table_filename(name)
    return read_jsonl(path) if path.exists() else []


def pass_curve(summary: dict[str, Any], prefix: str = "eval/pass@") -> dict[int, float]:
    """`{k: pass@k}` from a summary's `eval/pass@<k>` keys, in increasing k."""
    curve = {
        int(key[len(prefix) :]): float(v)
        for key, v in summary.items()
        if key.startswith(prefix) and key[len(prefix) :].isdigit()
    }
    return dict(sorted(curve.items()))


def find_runs(root: Path | str, marker: str, task: str | None = None) -> list[Path]:
    """Run dirs under `root` (e.g. `outputs/`) holding `marker`, oldest first by the marker's
    modification time; `task` keeps only `root/<task>/...`."""
    base = Path(root) / task if task else Path(root)
    if not base.is_dir():
        return []
    found = [p.parent for p in base.rglob(marker) if "wandb" not in p.parts]
    return sorted(found, key=lambda d: (d / marker).stat().st_mtime)


def runs_from_env(
    var: str, root: Path | str, marker: str, task: str | None = None, latest: int = 1
) -> list[Path]:
    """The run dirs named by environment variable `var` (separated by `os.pathsep` or commas; a
    relative path is taken from `root`'s parent, the repo, as typed at the repo's root; a dir
    without `marker` stands for every run under it), else the newest `latest` runs of `task`
    under `root`. Raises with one line when nothing is found."""
    value = os.environ.get(var, "").strip()
    if value:
        parts = [p.strip() for p in value.replace(",", os.pathsep).split(os.pathsep) if p.strip()]
        runs = list(_expand((Path(root).parent / p for p in parts), marker))
    else:
        runs = find_runs(root, marker, task)[-latest:] if latest > 0 else []
    if not runs:
        where = f"${var}={value!r}" if value else f"{Path(root) / (task or '')}"
        raise NudgekitError(f"no run with {marker} found at {where}")
    return runs


def _expand(dirs: Iterable[Path], marker: str) -> Iterable[Path]:
    for d in dirs:
        if (d / marker).exists():
            yield d
        else:
            yield from find_runs(d, marker)


def sweep_of(run: Path, marker: str) -> list[Path]:
    """The runs of the Hydra multirun that `run` belongs to (`.../multiruns/<ts>/<job>/`), else
    just `run`."""
    run = Path(run)
    if run.parent.parent.name != "multiruns" and not (run.parent / "multirun.yaml").exists():
        return [run]
    return sorted(
        (d for d in run.parent.iterdir() if (d / marker).exists()),
        key=lambda d: (len(d.name), d.name),
    )


def repo_root(start: Path | str = ".") -> Path:
    """The nearest directory at or above `start` holding `run.py` (a notebook runs in
    `notebooks/`), else `start` itself."""
    start = Path(start).resolve()
    return next((d for d in (start, *start.parents) if (d / "run.py").exists()), start)
