"""The verifier fuzzer: ``python -m nudgekit.rewards.fuzz --cases 10000 --seed 0`` (``make fuzz``).

Generates seeded cases over every registered verifier (`nudgekit.rewards.fuzz_cases`: honest
positives, false-accept traps by category, huge and adversarial text), runs them through the
guarded verifiers exactly as training does (the worker-process pool with its hard timeout), and
reports cases, exceptions, timeouts, calls over the hard timeout, false accepts by category,
false rejects by category and p50 / p99 per-call latency. The exit status is non-zero when there
is any exception, timeout, call over the hard timeout or false accept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from nudgekit.rewards.fuzz_cases import Case, generate_cases
from nudgekit.rewards.pool import get_pool
from nudgekit.rewards.registry import VERIFIERS, load_verifier


@dataclass
class FuzzReport:
    """What one fuzz run found (all counts are over calls)."""

    cases: int = 0
    verifiers: dict[str, int] = field(default_factory=dict)
    exceptions: int = 0
    timeouts: int = 0
    over_hard_timeout: int = 0
    hard_timeout_s: float = 0.0
    traps: dict[str, int] = field(default_factory=dict)
    false_accepts: dict[str, int] = field(default_factory=dict)
    false_rejects: dict[str, int] = field(default_factory=dict)
    p50_s: float = 0.0
    p99_s: float = 0.0
    max_s: float = 0.0
    wall_s: float = 0.0
    slowest: dict = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No exception, timeout, call over the hard timeout or false accept."""
        bad = self.exceptions + self.timeouts + self.over_hard_timeout
        return bad == 0 and sum(self.false_accepts.values()) == 0


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _tally(report: FuzzReport, case: Case, outcome: tuple[float, str, float]) -> None:
    score, status, _ = outcome
    report.exceptions += status == "failure"
    report.timeouts += status == "timeout"
    wrong = (case.expect is False and score >= 1.0) or (case.expect is True and score < 1.0)
    if wrong or status != "ok":
        bucket = report.false_accepts if case.expect is False else report.false_rejects
        if wrong:
            bucket[case.category] = bucket.get(case.category, 0) + 1
        if (status != "ok" or case.expect is False) and len(report.examples) < 20:
            report.examples.append(
                {**asdict(case), "completion": case.completion[:200], "answer": case.answer[:80],
                 "score": score, "status": status}
            )  # fmt: skip


def run_fuzz(
    cases: int = 10_000, seed: int = 0, timeout_s: float = 5.0, verifiers: list[str] | None = None
) -> FuzzReport:
    """Generate and run the cases; see the module docstring.

    Args:
        cases: how many cases in all, spread evenly over the verifiers.
        seed: the generator's seed (same seed, same cases).
        timeout_s: the verifiers' per-call limit (the hard one adds the pool's grace).
        verifiers: registry names (default: every registered verifier).

    Returns:
        The `FuzzReport`.
    """
    names = list(verifiers or VERIFIERS)
    generated = generate_cases(names, cases, seed)
    report = FuzzReport(
        cases=len(generated),
        verifiers=dict(Counter(c.verifier for c in generated)),
        traps=dict(sorted(Counter(c.category for c in generated if c.expect is False).items())),
    )
    report.hard_timeout_s = get_pool().hard_timeout_s(timeout_s) or 0.0
    latencies: list[float] = []
    start = time.perf_counter()
    for name in names:
        mine = [c for c in generated if c.verifier == name]
        verify = load_verifier(name, timeout_s=timeout_s)
        outcomes = verify.outcomes([c.completion for c in mine], [c.answer for c in mine])
        for case, outcome in zip(mine, outcomes):
            _tally(report, case, outcome)
            latencies.append(outcome[2])
            if outcome[2] > report.slowest.get("seconds", -1.0):
                report.slowest = {"seconds": outcome[2], "verifier": name,
                                  "category": case.category, "completion": case.completion[:80]}  # fmt: skip
    report.wall_s = time.perf_counter() - start
    report.over_hard_timeout = sum(s >= report.hard_timeout_s for s in latencies)
    report.p50_s, report.p99_s = percentile(latencies, 0.5), percentile(latencies, 0.99)
    report.max_s = max(latencies, default=0.0)
    return report


def format_report(report: FuzzReport) -> str:
    """A short human-readable summary (the full report is ``--json``)."""
    lines = [
        f"cases {report.cases} over {report.verifiers}",
        f"exceptions {report.exceptions}  timeouts {report.timeouts}  "
        f"over hard timeout ({report.hard_timeout_s:.1f} s) {report.over_hard_timeout}",
        f"false-accept traps {sum(report.traps.values())} by category {report.traps}",
        f"false accepts {sum(report.false_accepts.values())} {report.false_accepts}",
        f"false rejects {sum(report.false_rejects.values())} {report.false_rejects}",
        f"latency p50 {report.p50_s * 1e3:.2f} ms  p99 {report.p99_s * 1e3:.1f} ms  "
        f"max {report.max_s:.2f} s  wall {report.wall_s:.1f} s",
        f"slowest {report.slowest}",
        "OK" if report.ok else "FAILED",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-call limit, seconds")
    parser.add_argument("--verifiers", nargs="*", default=None, help="default: all registered")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    report = run_fuzz(args.cases, args.seed, args.timeout, args.verifiers)
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    if not report.ok and not args.json:
        for example in report.examples[:5]:
            print(json.dumps(example)[:400], file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
