"""Plot the scaling curves from the benchmark JSON: GRPO step time vs group size G and vs
completion length (`grpo_scaling.py`), nudging time vs output length (`nudging_scaling.py`).
Log-log axes: a cost linear in G or in length is a straight line of slope 1.

    python experiments/bench/plot_scaling.py          # reads results/, writes results/scaling.png
    python experiments/bench/plot_scaling.py --nudging results/nudging_scaling_cross.json

A panel whose JSON is missing is left out (and says so on stdout); no file means nothing to plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = (("step_s", "step"), ("generate_s", "generation"), ("update_s", "update"))


def _log_log(ax, xs: list[int]) -> None:
    """Both axes log 2: linear scaling is a straight line of slope 1."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(xs, [str(v) for v in xs])


def grpo_panel(ax, rows: list[dict], x: str, xlabel: str) -> None:
    """Step, generation and update seconds (medians) against `x`."""
    xs = [r[x] for r in rows]
    for key, label in PHASES:
        ax.plot(xs, [r[key] for r in rows], marker="o", ms=3, label=label)
    _log_log(ax, xs)
    ax.set(xlabel=xlabel, ylabel="seconds per step (median)")


def nudging_panel(ax, result: dict) -> None:
    """Median seconds of each run against the output budget."""
    lengths = sorted(int(k) for k in result["by_length"])
    runs = result["by_length"][str(lengths[0])]["median_seconds"]
    for name in runs:
        ax.plot(lengths, [result["by_length"][str(n)]["median_seconds"][name] for n in lengths],
                marker="o", ms=3, label=name)  # fmt: skip
    _log_log(ax, lengths)
    ax.set(xlabel="max new tokens", ylabel=f"seconds for {result['n']} questions (median)",
           title=f"nudging, batch {result['batch']}")  # fmt: skip


def plot(grpo: dict | None, nudging: dict | None, path: Path) -> Path | None:
    panels = []
    if grpo is not None:
        panels += [("G", grpo["G"]["rows"], "G", "group size G (64 new tokens)"),
                   ("length", grpo["length"]["rows"], "max_new_tokens",
                    "completion length (G = 8, forced)")]  # fmt: skip
    if nudging is not None:
        panels.append(("nudging", nudging, None, None))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (kind, data, x, xlabel) in zip(axes[0], panels):
        if kind == "nudging":
            nudging_panel(ax, data)
        else:
            grpo_panel(ax, data, x, xlabel)
            ax.set_title(f"GRPO step vs {kind}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load(path: Path) -> dict | None:
    if not path.exists():
        print(f"no {path}: panel left out")
        return None
    return json.loads(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grpo", type=Path, default=RESULTS / "grpo_scaling.json")
    ap.add_argument("--nudging", type=Path, default=RESULTS / "nudging_scaling_cross.json")
    ap.add_argument("--out", type=Path, default=RESULTS / "scaling.png")
    a = ap.parse_args()
    written = plot(load(a.grpo), load(a.nudging), a.out)
    print(f"wrote {written}" if written else "nothing to plot")


if __name__ == "__main__":
    main()
