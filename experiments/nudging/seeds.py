"""Nudging over several nudger build seeds from run dirs made by hand: the mean ± 95% CI tables
(and the gamma plot) that `make reproduce` writes into experiments/results/nudging.md.

    python experiments/nudging/seeds.py --main RUN_S0 RUN_S1 RUN_S2 \
        --gamma SWEEP_S0 SWEEP_S1 SWEEP_S2 --plot nudging_gamma.png

`--main` takes `nudging_tiny` run dirs (one per seed), `--gamma` the multirun dirs of
`sweep=gamma` (one per seed; each job's gamma is read from its config.yaml). The interval is a
Student-t interval over the per-seed values (nudgekit.reproduce.nudging_report).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from nudgekit.reproduce.nudging_report import gamma_table, gamma_values, main_table
from nudgekit.reproduce.plots import gamma_plot


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def sweep_jobs(sweeps: list[Path]) -> list[tuple[float, dict]]:
    """(gamma, summary) of every finished job of the given sweep dirs."""
    out = []
    for sweep in sweeps:
        for job in sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file()):
            cfg = yaml.safe_load((job / "config.yaml").read_text())
            out.append((float(cfg["decoder"]["gamma"]), summary(job)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--main", nargs="*", type=Path, default=[])
    ap.add_argument("--gamma", nargs="*", type=Path, default=[])
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    if args.main:
        print(main_table([summary(r) for r in args.main]))
    if args.gamma:
        values = gamma_values(sweep_jobs(args.gamma))
        print(gamma_table(values))
        if args.plot:
            gamma_plot(values, args.plot, "nudging vs gamma (mean, 95% CI over nudger seeds)")


if __name__ == "__main__":
    main()
