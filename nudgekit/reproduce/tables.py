"""Markdown helpers (pure): tables, number formatting, mean ± 95% CI over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

from nudgekit.eval import mean_ci


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are str()-ed, None prints as an em dash."""

    def cell(v: object) -> str:
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def num(v: float | None, digits: int = 3) -> str | None:
    """`0.123`; None and NaN stay missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return f"{v:.{digits}f}"


def mean_pm(values: Sequence[float], digits: int = 3) -> str | None:
    """`mean ± half-width of the 95% t-interval` over seeds (just the value for one seed)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    m, h = mean_ci(vals)
    return f"{m:.{digits}f}" if len(vals) == 1 else f"{m:.{digits}f} ± {h:.{digits}f}"


def mean_pm_each(values: Sequence[float], digits: int = 3) -> str | None:
    """`mean_pm` followed by the per-seed values: `0.500 ± 0.100 (0.450, 0.550)`."""
    head = mean_pm(values, digits)
    if head is None or len(values) < 2:
        return head
    return f"{head} (" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"


def mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def bins(values: Sequence[float], width: int) -> list[tuple[str, float]]:
    """(`first-last` step label, mean) over consecutive bins of `width` values (steps from 1)."""
    out = []
    for i in range(0, len(values), width):
        chunk = values[i : i + width]
        out.append((f"{i + 1}-{i + len(chunk)}", sum(chunk) / len(chunk)))
    return out
