"""Run-dir writers shared by the pipelines: markdown tables, the standard results files
(`write_run_results`) and pass@k curves (matplotlib, headless)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Render rows (dicts sharing keys) as a GitHub markdown table."""
    if not rows:
        return ""
    cols = list(rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_markdown_table(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    Path(path).write_text(markdown_table(rows))


def write_run_results(
    run_dir: Path, records_name: str, records: Sequence[Mapping], metrics: Mapping[str, float]
) -> None:
    """A pipeline's standard outputs: per-item JSONL, `summary.json`, `results.md` (metric table)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / records_name, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(metrics, indent=2))
    write_markdown_table(
        run_dir / "results.md", [{"metric": k, "value": f"{v:.4f}"} for k, v in metrics.items()]
    )


def pass_at_k_plot(path: Path, curves: Mapping[str, Mapping[int, float]], title: str = "") -> None:
    """Plot pass@k against k (log2 x-axis) for each named curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
