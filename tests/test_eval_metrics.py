"""pass@k, majority vote and confidence intervals on hand-built numbers."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest

from nudgekit.eval import majority_vote, mean_ci, mean_pass_at_k, pass_at_k


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Enumerate every k-subset of n samples (c of them correct) and count the hits."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(samples[i] for i in s) for s in subsets)
    return hits / len(subsets)


def exact_pass_at_k(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def test_matches_brute_force_on_random_cases():
    rng = random.Random(0)
    for _ in range(60):
        n = rng.randint(1, 12)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_edge_values():
    assert pass_at_k(8, 0, 8) == 0.0  # nothing correct
    assert pass_at_k(8, 8, 1) == 1.0  # everything correct
    assert pass_at_k(8, 1, 8) == 1.0  # the one correct sample is always drawn at k=n
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)  # pass@1 is c/n
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # C(2,2)/C(4,2) = 1/6


@pytest.mark.parametrize("c", [0, 1, 2, 17, 512, 1000, 1024])
@pytest.mark.parametrize("k", [1, 8, 64, 256, 1024])
def test_stable_at_n_1024(c, k):
    got = pass_at_k(1024, c, k)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(exact_pass_at_k(1024, c, k), abs=1e-12)


def test_monotone_in_k():
    values = [pass_at_k(1024, 3, k) for k in (1, 2, 4, 16, 256, 1024)]
    assert values == sorted(values)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_mean_pass_at_k():
    # problem 1: pass@1 = 1/2; problem 2: pass@1 = 0
    assert mean_pass_at_k([(2, 1), (2, 0)], 1) == pytest.approx(0.25)


def test_majority_vote_ties_go_to_first_seen():
    assert majority_vote(["3", "4", "4", "3"]) == "3"
    assert majority_vote(["4", "3", "3", "4"]) == "4"
    assert majority_vote([None, "5", None]) == "5"
    assert majority_vote([None, None]) is None
    assert majority_vote(["1", "2", "2"]) == "2"


def test_mean_ci():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    # std (ddof=1) = 1, t(0.975, df=2) = 4.303, half = 4.303 / sqrt(3)
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    assert mean_ci([0.5]) == (0.5, 0.0)
