"""Cache keys and DONE markers: a stage is reused only if its key (stage list version, command
line, dependencies' keys and, from `make reproduce`, the composed config and the code hash of
`fingerprint`) matches a finished run; a run killed midway has no marker and re-runs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from nudgekit.reproduce.stages import STAGE_LIST_VERSION, Stage

DONE_FILE = "DONE.json"


def order(stages: list[Stage]) -> list[Stage]:
    """Topological order (stable); unknown dependencies and cycles are errors."""
    by_name = {s.name: s for s in stages}
    if len(by_name) != len(stages):
        raise ValueError("duplicate stage names")
    done: dict[str, None] = {}
    visiting: set[str] = set()

    def visit(s: Stage) -> None:
        if s.name in done:
            return
        if s.name in visiting:
            raise ValueError(f"dependency cycle through stage {s.name!r}")
        visiting.add(s.name)
        for d in s.deps:
            if d not in by_name:
                raise ValueError(f"stage {s.name!r} depends on unknown stage {d!r}")
            visit(by_name[d])
        visiting.discard(s.name)
        done[s.name] = None

    for s in stages:
        visit(s)
    return [by_name[n] for n in done]


Fingerprint = Callable[[Stage], dict[str, str]]


def stage_key(
    stage: Stage,
    dep_keys: dict[str, str],
    version: str = STAGE_LIST_VERSION,
    fingerprint: Fingerprint | None = None,
) -> str:
    """sha256 of everything that determines the stage's result (the run-dir references stay
    symbolic, so the same list under another reproduce root has the same keys); `fingerprint`
    adds what the command line does not show (`reproduce.fingerprint`: composed config, code)."""
    payload = {
        "version": version,
        "name": stage.name,
        "args": list(stage.args),
        "multirun": stage.multirun,
        "deps": {d: dep_keys[d] for d in sorted(stage.deps)},
    }
    if fingerprint is not None:
        payload["fingerprint"] = fingerprint(stage)
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_keys(
    stages: list[Stage], version: str = STAGE_LIST_VERSION, fingerprint: Fingerprint | None = None
) -> dict[str, str]:
    """Every stage's key, dependencies first (a dependency's change propagates to dependants)."""
    keys: dict[str, str] = {}
    for s in order(stages):
        keys[s.name] = stage_key(s, keys, version, fingerprint)
    return keys


def run_dir(root: Path, stage: Stage, key: str) -> Path:
    """Where a stage writes: keyed, so a changed stage never resumes a stale run's checkpoints."""
    return Path(root) / "stages" / f"{stage.name}-{key}"


def read_done(path: Path, key: str) -> dict | None:
    """The DONE marker of a finished run with this key, or None."""
    marker = Path(path) / DONE_FILE
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None
    return info if info.get("key") == key else None


def write_done(path: Path, key: str, cmd: list[str], elapsed_s: float) -> None:
    """Atomically mark a run finished (written last, after the process exited 0)."""
    info = {
        "key": key,
        "run_dir": str(path),
        "cmd": cmd,
        "elapsed_s": round(elapsed_s, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = Path(path) / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(Path(path) / DONE_FILE)
