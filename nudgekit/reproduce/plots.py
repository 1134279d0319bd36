"""The reproduce plots (matplotlib, Agg): pass@k curves, learning-signal fraction per step, and the
nudging gamma trade-off. Each takes plain values and a path, so the writer stays data-only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nudgekit.eval import mean_ci  # noqa: E402


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


def gamma_plot(values: dict[float, dict[str, list[float]]], path: Path, title: str) -> Path:
    """Accuracy (strict, lenient) and nudged-token share vs gamma, side by side; `values` maps
    gamma -> summary key -> per-seed values; points are means, bars the 95% t-interval."""
    gs = sorted(values)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    panels = (
        (a1, (("nudging/accuracy", "strict"), ("nudging/lenient_accuracy", "lenient"))),
        (a2, (("nudging/nudge_token_share", "nudged-token share"),)),
    )
    for ax, keys in panels:
        for key, label in keys:
            pts = [(g, *mean_ci(values[g][key])) for g in gs if values[g].get(key)]
            if pts:
                x, m, h = zip(*pts, strict=True)
                ax.errorbar(x, m, yerr=h, marker="o", capsize=3, label=label)
        ax.set(xlabel="gamma", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    a1.set(ylabel="accuracy", title="accuracy")
    a2.set(ylabel="share", title="nudged-token share")
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
