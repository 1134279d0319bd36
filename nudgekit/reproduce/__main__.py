"""`python -m nudgekit.reproduce [--profile full|tiny] [--root DIR] [--results DIR]`: run the
stage list (cached) and write the results; exit 1 if any stage failed (its log path is printed)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from nudgekit.reproduce.fingerprint import Fingerprint
from nudgekit.reproduce.scheduler import Scheduler, default_env, fmt_s
from nudgekit.reproduce.stages import PROFILES, RUN_REF, Stage, build_stages

ROOT = Path(__file__).resolve().parents[2]


def runpy_command(python: str) -> callable:
    """The argv of a stage: `python run.py [-m] <args> hydra.{run,sweep}.dir=<run dir>`."""

    def command(stage: Stage, run_dir: Path, dirs: dict[str, Path]) -> list[str]:
        args = list(stage.args)
        for name, d in dirs.items():
            args = [a.replace(RUN_REF % name, str(d)) for a in args]
        where = "hydra.sweep.dir" if stage.multirun else "hydra.run.dir"
        return [python, "run.py", *(["-m"] if stage.multirun else []), *args, f"{where}={run_dir}"]

    return command


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m nudgekit.reproduce", description=__doc__)
    ap.add_argument("--profile", default="full", choices=sorted(PROFILES))
    ap.add_argument("--root", default="outputs/reproduce", help="stage run dirs and logs")
    ap.add_argument(
        "--results",
        default=None,
        help="where the .md/.png go (default: experiments/results for the full "
        "profile, experiments/results/nurl_full for nurl, <root>/results-tiny "
        "for tiny)",
    )
    ap.add_argument("--slots", type=int, default=2, help="stages run at the same time")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--list", action="store_true", help="print the stages and their keys, run none")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    root = Path(a.root).resolve()
    where = PROFILES[a.profile].results
    results = (
        Path(a.results) if a.results else (ROOT / where if where else root / f"results-{a.profile}")
    )
    stages = build_stages(a.profile)
    # keys cover the composed config of each stage and the code hash of the package
    sched = Scheduler(
        stages,
        root,
        runpy_command(a.python),
        slots=a.slots,
        env=default_env(),
        cwd=ROOT,
        fingerprint=Fingerprint(ROOT),
    )
    if a.list:
        for s in sched.stages:
            print(f"{s.name:32s} {sched.keys[s.name]}  {' '.join(s.args)}")
        return 0
    # SIGTERM (a job scheduler, `kill`) stops the running stages too, like Ctrl-C: the scheduler
    # terminates its children on any exception, and a stopped stage has no DONE marker
    signal.signal(signal.SIGTERM, _raise_exit)
    t0 = time.monotonic()
    print(f"reproduce: profile {a.profile}, {len(stages)} stages, root {root}", flush=True)
    res = sched.run()
    from nudgekit.reproduce.writer import write_results

    failed = [r for r in res.values() if r.status in ("failed", "skipped")]
    written = write_results(res, stages, results, profile=a.profile)
    print(f"reproduce: wrote {len(written)} files to {results}")
    print(
        f"reproduce: total {fmt_s(time.monotonic() - t0)}; "
        + ", ".join(
            f"{k} {sum(r.status == k for r in res.values())}"
            for k in ("done", "cached", "failed", "skipped")
        )
    )
    for r in failed:
        if r.status == "failed":
            print(f"reproduce: FAILED {r.name} (exit {r.returncode}); log: {r.log}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
