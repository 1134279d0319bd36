"""The reproduce plots (matplotlib, Agg): pass@k curves, learning-signal fraction per step, and the
nudging gamma trade-off. Each takes plain values and a path, so the writer stays data-only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _band(ax, x, runs: list[list[float]], label: str) -> None:
    """Mean over runs as a line, min-max over runs as a shaded band (the seed spread)."""
    y = np.asarray(runs, dtype=float)
    (line,) = ax.plot(x, y.mean(axis=0), marker="o", ms=3, label=f"{label} (n={len(runs)})")
    if len(runs) > 1:
        ax.fill_between(x, y.min(axis=0), y.max(axis=0), alpha=0.2, color=line.get_color())


def pass_at_k_plot(curves: dict[str, list[dict[int, float]]], path: Path, title: str) -> Path:
    """pass@k vs k (log2 axis); one line per model family, band = spread over seeds."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in curves.items():
        ks = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
        if ks:
            _band(ax, ks, [[r[k] for k in ks] for r in runs], label)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k", ylabel="pass@k", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def signal_plot(curves: dict[str, list[list[float]]], path: Path, title: str) -> Path:
    """Learning-signal fraction per stage-2 step (runs cut to the shortest); band = seed spread."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        _band(ax, list(range(1, n + 1)), [r[:n] for r in runs], label)
    ax.set(xlabel="stage-2 step", ylabel="1 - frac_reward_zero_std", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def gamma_plot(rows: list[dict[str, float]], path: Path, title: str) -> Path:
    """Accuracy (strict, lenient) and nudged-token share vs gamma, side by side."""
    rows = sorted(rows, key=lambda r: r["gamma"])
    g = [r["gamma"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.plot(g, [r["strict"] for r in rows], marker="o", label="strict")
    a1.plot(g, [r["lenient"] for r in rows], marker="s", label="lenient")
    a1.set(xlabel="gamma", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    a1.legend(fontsize=8)
    a2.plot(g, [r["share"] for r in rows], marker="o", color="tab:red")
    a2.set(xlabel="gamma", ylabel="nudged-token share", title="nudged-token share", ylim=(0, 1.02))
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
