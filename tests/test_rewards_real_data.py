"""The verifiers measured on real benchmark files in ../shared/data (skipped when absent).

* gsm8k: agreement with the human correctness labels of 5,276 model solutions (>= 99.5%), also
  after rewriting each solution's final ``A: x`` line into the other conventions the verifier
  reads (``#### x``, ``The answer is x.``, ``\\boxed{x}``), which the labelled file never uses.
* math: every MATH-500 reference solution verifies against its own answer (>= 99%), and no
  solution verifies against the next problem's answer unless the two answers are equal.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from nudgekit.rewards import load_verifier

SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
_FINAL_A = re.compile(r"^A:\s*(.*)$", re.MULTILINE)


def _data_dir() -> Path:
    env = os.environ.get("NUDGEKIT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _read_jsonl(relative: str) -> list[dict]:
    path = _data_dir() / relative
    if not path.is_file():
        pytest.skip(f"real data file {path} not found (set NUDGEKIT_DATA to ../shared/data)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _gsm8k_confusion(rows: list[dict], rewrite: str | None) -> Counter:
    """(label, verdict) counts; ``rewrite`` replaces each final 'A: x' line, e.g. '#### {}'."""
    verify = load_verifier("gsm8k")
    confusion: Counter = Counter()
    for row in rows:
        for solver in SOLVERS:
            text = row[solver]["solution"]
            if rewrite is not None:
                text = _FINAL_A.sub(lambda m: rewrite.format(m.group(1)), text)
            verdict = verify(text, row["ground_truth"]) == 1.0
            confusion[(row[solver]["is_correct"], verdict)] += 1
    assert verify.stats.failures == 0 and verify.stats.timeouts == 0
    return confusion


@pytest.mark.parametrize("rewrite", [None, "#### {}", "The answer is {}.", "So \\boxed{{{}}}"])
def test_gsm8k_verifier_agrees_with_human_labels(rewrite):
    rows = _read_jsonl("gsm8k/model_solutions_labeled.jsonl")
    confusion = _gsm8k_confusion(rows, rewrite)
    total = sum(confusion.values())
    agreement = (confusion[(True, True)] + confusion[(False, False)]) / total
    print(f"gsm8k rewrite={rewrite!r}: agreement {agreement:.4%} on {total}, {dict(confusion)}")
    assert total == 5276
    assert agreement >= 0.995


def test_math_verifier_on_math500_references():
    rows = _read_jsonl("math500/test.jsonl")
    verify = load_verifier("math", timeout_s=10.0)
    own = [verify(row["solution"], row["answer"]) for row in rows]
    self_rate = sum(own) / len(rows)

    false_accepts, equal_pairs = [], 0
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]["answer"]
        if verify(f"${other}$", row["answer"]) == 1.0:  # the two answers are the same value
            equal_pairs += 1
        elif verify(row["solution"], other) == 1.0:
            false_accepts.append(i)
    print(
        f"math500: self {self_rate:.2%}, cross false accepts {len(false_accepts)} / "
        f"{len(rows) - equal_pairs} ({equal_pairs} equal-answer pairs excluded), {verify.stats}"
    )
    assert self_rate >= 0.99
    assert false_accepts == []
    assert equal_pairs <= 5  # the exclusion must not hide the check (measured: 3)
    assert verify.stats.timeouts == 0
