"""Pure evaluation metrics: unbiased pass@k, majority vote, mean with a 95% interval."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k).

    Computed as a product of ratios, so it is exact in float64 for n up to thousands (no huge
    binomials).

    Args:
        n: samples drawn for the problem.
        c: how many of them are correct.
        k: the k in pass@k (1 <= k <= n).

    Returns:
        The probability that at least one of k samples drawn without replacement is correct.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    ratio = np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64))
    return float(1.0 - ratio)


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given `(n, c)` per problem."""
    if not counts:
        return float("nan")
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most common non-None answer; ties go to the answer seen first (deterministic)."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == best)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of a Student-t confidence interval (half-width 0 for one value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), 0.0
    if confidence != 0.95:
        raise ValueError("only the 95% interval is tabulated")
    df = x.size - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.96
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(x.size))


# Student-t 97.5% quantiles for df = 1..30 (two-sided 95%); beyond that the normal 1.96 is used.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)
