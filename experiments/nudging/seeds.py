"""Nudging over several nudger build seeds: mean and 95% CI tables (+ the gamma plot).

    python experiments/nudging/seeds.py --main RUN_S0 RUN_S1 RUN_S2 \
        --gamma SWEEP_S0 SWEEP_S1 SWEEP_S2 --plot experiments/results/nudging_gamma.png

`--main` takes `nudging_tiny` run dirs (one per seed), `--gamma` the multirun dirs of
`sweep=gamma` (one per seed; each job's gamma is read from its `.hydra/overrides.yaml` or
`config.yaml`). The CI is a Student-t interval over the per-seed values.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from nudgekit.eval.metrics import mean_ci

MAIN = (
    ("nudging/accuracy", "nudging strict"),
    ("nudging/lenient_accuracy", "nudging lenient"),
    ("nudging/nudge_token_share", "nudged-token share"),
    ("nudging/stop/nudging_eos", "stop: nudger EOS"),
    ("nudger_only/accuracy", "nudger-only strict"),
    ("base_only/accuracy", "base-only strict"),
    ("base_only/lenient_accuracy", "base-only lenient"),
    ("aligned_large/accuracy", "aligned-large strict"),
)
GAMMA = (
    ("nudging/accuracy", "strict"),
    ("nudging/lenient_accuracy", "lenient"),
    ("nudging/nudge_token_share", "nudged-token share"),
    ("nudging/intervention_rate", "interventions /100 tok"),
)


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "—"
    mean, half = mean_ci(values)
    each = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{mean:.{digits}f} ± {half:.{digits}f} ({each})"


def main_table(runs: list[Path]) -> str:
    rows = ["| metric | mean ± 95% CI (per seed) |", "|---|---|"]
    sums = [summary(r) for r in runs]
    for key, label in MAIN:
        vals = [s[key] for s in sums if key in s]
        if vals:
            rows.append(f"| {label} | {cell(vals)} |")
    return "\n".join(rows)


def job_gamma(job: Path) -> float:
    cfg = yaml.safe_load((job / "config.yaml").read_text())
    return float(cfg["decoder"]["gamma"])


def gamma_values(sweeps: list[Path]) -> dict[float, dict[str, list[float]]]:
    out: dict[float, dict[str, list[float]]] = {}
    for sweep in sweeps:
        for job in sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file()):
            s, g = summary(job), job_gamma(job)
            for key, _ in GAMMA:
                out.setdefault(g, {}).setdefault(key, []).append(s[key])
    return dict(sorted(out.items()))


def gamma_table(values: dict[float, dict[str, list[float]]]) -> str:
    head = "| gamma | " + " | ".join(label for _, label in GAMMA) + " |"
    rows = [head, "|---" * (len(GAMMA) + 1) + "|"]
    for g, byk in values.items():
        digits = {"nudging/intervention_rate": 1}
        cells = [cell(byk.get(k, []), digits.get(k, 3)) for k, _ in GAMMA]
        rows.append(f"| {g:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def gamma_plot(values: dict[float, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = list(values)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, keys in zip(axes, (GAMMA[:2], GAMMA[2:3])):
        for key, label in keys:
            stats = [mean_ci(values[g][key]) for g in gs]
            ax.errorbar(
                gs,
                [m for m, _ in stats],
                yerr=[h for _, h in stats],
                marker="o",
                capsize=3,
                label=label,
            )
        ax.set(xlabel="gamma", ylim=(-0.02, 1.02))
        ax.legend()
    axes[0].set(ylabel="accuracy", title="accuracy (mean, 95% CI over seeds)")
    axes[1].set(ylabel="share", title="nudged-token share")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--main", nargs="*", type=Path, default=[])
    ap.add_argument("--gamma", nargs="*", type=Path, default=[])
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    if args.main:
        print(main_table(args.main), end="\n\n")
    if args.gamma:
        values = gamma_values(args.gamma)
        print(gamma_table(values))
        if args.plot:
            gamma_plot(values, args.plot)


if __name__ == "__main__":
    main()
