"""A small DAG scheduler: runs stage subprocesses at most `slots` cores at a time, longest
remaining chain first, each with its own log file; skips stages whose DONE marker matches their
key; a failed stage stops only its dependants (independent work still finishes, so a re-run has
less to do)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nudgekit.reproduce.cache import (
    Fingerprint,
    order,
    read_done,
    run_dir,
    stage_keys,
    write_done,
)
from nudgekit.reproduce.stages import STAGE_LIST_VERSION, Stage

# (stage, its run dir, every stage's run dir) -> argv
Command = Callable[[Stage, Path, dict[str, Path]], list[str]]


@dataclass
class StageResult:
    """What happened to one stage: done | cached | failed | skipped (a dependency failed)."""

    name: str
    status: str
    run_dir: Path
    log: Path
    elapsed_s: float = 0.0
    returncode: int | None = None


@dataclass
class _Running:
    stage: Stage
    proc: subprocess.Popen
    start: float
    cmd: list[str]
    log_file: object


def fmt_s(seconds: float) -> str:
    """`1h02m`, `4m05s`, `12s`."""
    s = int(round(max(seconds, 0)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def critical_path(stages: list[Stage]) -> dict[str, float]:
    """Each stage's estimate plus the longest chain of dependants after it (launch priority)."""
    children: dict[str, list[str]] = {s.name: [] for s in stages}
    for s in stages:
        for d in s.deps:
            children[d].append(s.name)
    est = {s.name: s.est_s for s in stages}
    prio: dict[str, float] = {}
    for s in reversed(order(stages)):
        prio[s.name] = est[s.name] + max((prio[c] for c in children[s.name]), default=0.0)
    return prio


class Scheduler:
    """Run `stages` under `root` (run dirs in root/stages, logs in root/logs)."""

    def __init__(
        self,
        stages: list[Stage],
        root: Path,
        command: Command,
        *,
        slots: int = 2,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        version: str = STAGE_LIST_VERSION,
        say: Callable[[str], None] | None = None,
        poll_s: float = 0.2,
        fingerprint: Fingerprint | None = None,
    ):
        self.stages, self.root, self.command = order(stages), Path(root), command
        self.slots, self.env, self.cwd, self.poll_s = slots, env, cwd, poll_s
        self.say = say or (lambda line: print(line, flush=True))
        self.keys = stage_keys(self.stages, version, fingerprint)
        self.dirs = {s.name: run_dir(self.root, s, self.keys[s.name]) for s in self.stages}
        self.results: dict[str, StageResult] = {}

    def log_path(self, stage: Stage) -> Path:
        return self.root / "logs" / f"{stage.name}.log"

    def run(self) -> dict[str, StageResult]:
        """Run everything not cached; returns every stage's result (dependency order)."""
        self.t0 = time.monotonic()
        for s in self.stages:
            info = read_done(self.dirs[s.name], self.keys[s.name])
            if info is not None:
                self.results[s.name] = StageResult(
                    s.name,
                    "cached",
                    self.dirs[s.name],
                    self.log_path(s),
                    info.get("elapsed_s", 0.0),
                )
                self.say(f"[cached] {s.name} ({self.dirs[s.name]})")
        prio = critical_path(self.stages)
        pending = sorted(
            (s for s in self.stages if s.name not in self.results), key=lambda s: -prio[s.name]
        )
        running: dict[str, _Running] = {}
        try:
            while pending or running:
                pending = self._skip_blocked(pending)
                self._launch_ready(pending, running)
                self._reap(running)
                time.sleep(self.poll_s)
        except BaseException:
            for r in running.values():
                _terminate(r.proc)
            raise
        return {s.name: self.results[s.name] for s in self.stages}

    def _skip_blocked(self, pending: list[Stage]) -> list[Stage]:
        keep = []
        for s in pending:
            bad = [
                d
                for d in s.deps
                if d in self.results and self.results[d].status in ("failed", "skipped")
            ]
            if bad:
                self.results[s.name] = StageResult(
                    s.name, "skipped", self.dirs[s.name], self.log_path(s)
                )
                self.say(f"[skip] {s.name}: dependency {bad[0]} did not finish")
            else:
                keep.append(s)
        return keep

    def _launch_ready(self, pending: list[Stage], running: dict[str, _Running]) -> None:
        free = self.slots - sum(min(r.stage.slots, self.slots) for r in running.values())
        for s in list(pending):
            need = min(s.slots, self.slots)
            ready = all(
                d in self.results and self.results[d].status in ("done", "cached") for d in s.deps
            )
            if ready and need <= free:
                running[s.name] = self._start(s)
                pending.remove(s)
                free -= need

    def _start(self, s: Stage) -> _Running:
        cmd = self.command(s, self.dirs[s.name], self.dirs)
        log = self.log_path(s)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.dirs[s.name].parent.mkdir(parents=True, exist_ok=True)
        f = open(log, "w")  # noqa: SIM115  (closed when the stage ends)
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
        )
        self.say(f"[start] {s.name} (est {fmt_s(s.est_s)}) | {self._progress()}")
        return _Running(s, proc, time.monotonic(), cmd, f)

    def _reap(self, running: dict[str, _Running]) -> None:
        for name, r in list(running.items()):
            rc = r.proc.poll()
            if rc is None:
                continue
            r.log_file.close()
            del running[name]
            elapsed = time.monotonic() - r.start
            d, log = self.dirs[name], self.log_path(r.stage)
            if rc == 0:
                d.mkdir(parents=True, exist_ok=True)
                write_done(d, self.keys[name], r.cmd, elapsed)
                self.results[name] = StageResult(name, "done", d, log, elapsed, rc)
                self.say(f"[done] {name} in {fmt_s(elapsed)} | {self._progress(running)}")
            else:
                self.results[name] = StageResult(name, "failed", d, log, elapsed, rc)
                self.say(f"[FAILED] {name} (exit {rc}) after {fmt_s(elapsed)}; log: {log}")

    def _progress(self, running: dict[str, _Running] | None = None) -> str:
        finished = len(self.results)
        left = [s for s in self.stages if s.name not in self.results]
        now = time.monotonic()
        starts = {n: r.start for n, r in (running or {}).items()}
        work = sum(
            min(s.slots, self.slots)
            * (max(s.est_s - (now - starts[s.name]), 0) if s.name in starts else s.est_s)
            for s in left
        )
        return (
            f"{finished}/{len(self.stages)} finished, elapsed {fmt_s(now - self.t0)}, "
            f"ETA ~{fmt_s(work / self.slots)}"
        )


def _terminate(proc: subprocess.Popen) -> None:
    """Stop a stage we started (its whole process group: Hydra sweeps, zoo build workers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def default_env() -> dict[str, str]:
    """One torch/BLAS thread per stage (two stages share two cores), offline, quiet."""
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "WANDB_SILENT": "true",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env
