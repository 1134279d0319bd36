"""Read what the stages left in their run dirs (summary.json, metrics.jsonl, Hydra overrides) into
plain Python values; a missing file reads as empty, so a failed stage leaves a gap, not a crash."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from nudgekit.eval import runs


def read_json(path: Path) -> dict:
    """A JSON object, or {} if the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of <run dir>/metrics.jsonl (one dict per logged step); [] if there is none."""
    if not (Path(run_dir) / "metrics.jsonl").is_file():
        return []
    return runs.read_metrics(run_dir)


def series(rows: list[dict], key: str, stage: int | None = None) -> list[tuple[int, float]]:
    """(step, value) of `key` over the rows that have it (optionally only NuRL stage `stage`)."""
    return [
        (int(r["step"]), float(r[key]))
        for r in rows
        if key in r and (stage is None or r.get("nurl/stage") == stage)
    ]


def signal_curve(rows: list[dict], key: str = "train/frac_reward_zero_std") -> list[float]:
    """Learning-signal fraction (1 - share of all-equal groups) per stage-2 step, in step order."""
    return [1.0 - v for _, v in sorted(series(rows, key, stage=2))]


def stage2_curve(rows: list[dict], key: str) -> list[float]:
    """`key` per stage-2 step, in step order (for metrics that are already a signal share)."""
    return [v for _, v in sorted(series(rows, key, stage=2))]


def sweep_jobs(sweep_dir: Path) -> list[tuple[str, Path]]:
    """(label, job dir) for each job of a Hydra multirun; the label is the overrides that differ
    between jobs (`pipeline.schedule.injector.gate=always pipeline.schedule.start=step0`)."""
    jobs = sorted(
        (p for p in Path(sweep_dir).glob("*") if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    overrides = []
    for j in jobs:
        f = j / ".hydra" / "overrides.yaml"
        overrides.append(yaml.safe_load(f.read_text()) if f.is_file() else [])
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    return [
        (" ".join(o for o in ov if o not in common) or j.name, j)
        for ov, j in zip(overrides, jobs, strict=True)
    ]


def override_value(label: str, key: str) -> str | None:
    """The value of `key=...` in a sweep label."""
    for part in label.split():
        if part.startswith(key + "="):
            return part.split("=", 1)[1]
    return None
