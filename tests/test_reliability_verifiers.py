"""Reliability probes of issue 19 part 5: verifier false accepts, linear-time extraction, the
process pool's hard timeout, and a 1,000-case slice of the seeded verifier fuzzer."""

from __future__ import annotations

import os
import threading
import time

import pytest

from nudgekit.rewards import load_verifier
from nudgekit.rewards.extract import choice_letter, final_number, to_number

# --- false accepts: a naive parse reads a different number than the one written -------------


@pytest.mark.parametrize(
    ("completion", "wrong", "right"),
    [
        ("The answer is 1.5e3", "1.5", "1500"),
        ("#### 2E-2", "2", "0.02"),
        ("The answer is \u22127", "7", "-7"),  # U+2212 MINUS SIGN
        ("The answer is $-$7", "7", "-7"),
        ("The answer is -(7)", "7", "-7"),
        ("\\boxed{-(7)}", "7", "-7"),
        ("\\boxed{2^{10}}", "2", "1024"),
        ("The answer is 2^10.", "2", "1024"),
        ("\\boxed{1.5 \\times 10^{3}}", "1.5", "1500"),
        ("The answer is 3,5", "3", None),
        ("\\boxed{3,5}", "3", None),
        ("\\boxed{3\\sqrt{2}}", "3", None),
        ("so x = 3\\sqrt{2}", "2", None),
        ("\\boxed{3 \\sqrt 2}", "3", None),
        ("\\boxed{2\\pi}", "2", None),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "2", None),
    ],
)
@pytest.mark.parametrize("name", ["gsm8k", "numeric"])
def test_numbers_are_read_whole(name, completion, wrong, right):
    verify = load_verifier(name, isolation="inline")
    assert verify(completion, wrong) == 0.0
    if right is not None:
        assert verify(completion, right) == 1.0


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("She has 1,200 dollars.\n#### 1,200", "1,200"),
        ("The answer is 1,000,000.", "1,000,000"),
        ("16 - 3 - 4 = 9", "9"),
        ("Answer: -5", "-5"),
        ("The area is 25 \\text{ cm}^2.", "25"),
        ("The answer is **18**.", "18"),
        ("The answer is 3, since 1 + 2 = 3.", "3"),
    ],
)
def test_plain_numbers_still_read(text, number):
    assert final_number(text) == number


def test_to_number_is_strict_about_commas_and_exponents():
    assert to_number("1,000") == 1000
    assert to_number("3,5") is None
    assert to_number("1.5e3") == 1500
    assert to_number("\u22127") == -7
    assert to_number("1e999999999") is None  # would take forever to expand


def test_numeric_tolerance_follows_written_precision():
    verify = load_verifier("numeric", isolation="inline")
    assert verify("The answer is 1000099", "1000000") == 0.0
    assert verify("The answer is 1000001", "1000000") == 0.0
    assert verify("The answer is 0.30000000000000004", "0.3") == 1.0  # float rounding
    assert verify("The answer is 0.3", "0.30000000000000004") == 1.0
    assert verify("The answer is 0.33333", "1/3") == 1.0  # 1/3 rounded as written
    assert verify("The answer is 0.33", "1/3") == 0.0  # too few digits to be a rounding
    assert verify("The answer is 3.1416", "3.14159265") == 1.0
    assert verify("The answer is 3.1417", "3.14159265") == 0.0
    assert verify("The answer is 1e308", "1e-308") == 0.0  # no float overflow


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("Option A is correct, not Option B", "B", 0.0),
        ("Option A is correct, not Option B", "A", 1.0),
        ("The answer is Option C. Option D is wrong.", "D", 0.0),
        ("The answer is Option C. Option D is wrong.", "C", 1.0),
        ("Option B is incorrect because of X. So Option E.", "E", 1.0),
        ("It is (A), not (B).", "B", 0.0),
        ("It is (A), not (B).", "A", 1.0),
        ("We can rule out option C; the answer is B.", "C", 0.0),
        ("(B) isn't right, (D) is.", "B", 0.0),
        ("Between (A) and (B), I pick (B)", "B", 1.0),
    ],
)
def test_choice_ignores_negated_options(completion, gold, expected):
    assert load_verifier("choice", isolation="inline")(completion, gold) == expected


@pytest.mark.parametrize(
    ("completion", "wrong", "right"),
    [
        ("The answer is 1.5e3", "1.5", "1500"),
        ("The answer is \u22127", "7", "-7"),
        ("Answer: -(7)", "7", "-7"),
        ("#### 5^{7}", "5", "78125"),
        ("The answer is 5\\sqrt{11}.", "5", "5\\sqrt{11}"),
        ("\\boxed{74,74}", "74", None),
        ("\\boxed{3,5}", "3", None),
    ],
)
def test_math_verifier_reads_answers_whole(completion, wrong, right):
    verify = load_verifier("math", isolation="inline")
    assert verify(completion, wrong) == 0.0
    if right is not None:
        assert verify(completion, right) == 1.0


@pytest.mark.parametrize(
    "completion",
    [
        "\\boxed{10^{10^{10}}}",
        "\\boxed{" + "(" * 30 + "1" + ")" * 30 + "}",
        "\\boxed{10000000!}",
        "$" + "x^" * 40 + "x$",
        "\\boxed{" + "+".join(["1"] * 3000) + "}",
        "9" * 20_000,
    ],
    ids=lambda t: repr(t[:16]),
)
def test_math_verifier_refuses_costly_input_quickly(completion):
    verify = load_verifier("math", isolation="inline", timeout_s=30.0)
    start = time.perf_counter()
    assert verify(completion, "1") == 0.0
    assert time.perf_counter() - start < 2.0  # sympy took 3 s to minutes on these


def test_choice_letter_when_everything_is_negated():
    assert choice_letter("Not option A, not option B.") is None


# --- linear time: adversarial inputs finish quickly (a guard against catastrophic behaviour) --

ADVERSARIAL = [
    "option" + " " * 2_000,
    "answer" + " " * 100_000,
    "Answer:" + " " * 100_000 + "x",
    "\n" * 100_000,
    " \n" * 50_000 + "A",
    "1" + " " * 100_000 + "/",
    "1," * 50_000,
    "1e" * 50_000,
    "-(" * 50_000,
    "2^{" * 30_000,
    "\\boxed{" * 20_000 + "1" + "}" * 20_000,
    "(A)" * 30_000,
    "not option B " * 5_000,
    "9" * 100_000,
    "1.5e999999999",
    "#" * 100_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: repr(t[:12]))
def test_extraction_is_linear_on_adversarial_text(text):
    start = time.perf_counter()
    final_number(text)
    choice_letter(text)
    to_number(text)
    assert time.perf_counter() - start < 2.0  # catastrophic backtracking took 65 s on 2,000


@pytest.mark.parametrize("name", ["gsm8k", "numeric", "choice", "tiny"])
def test_verifiers_on_adversarial_text_score_zero_quickly(name):
    verify = load_verifier(name, isolation="inline", max_chars=200_000)
    for text in ADVERSARIAL:
        assert verify(text, "1") in (0.0, 1.0)
    assert verify.stats.failures == 0 and verify.stats.timeouts == 0


# --- the process pool: a hard timeout that stops the call, from any thread -------------------


def stuck_verifier(completion: str, answer: str) -> float:
    """Write its pid to ``completion`` (a path), then spin forever, swallowing every
    exception (the SIGALRM timeout included), like a stuck C extension."""
    with open(completion, "w") as f:
        f.write(str(os.getpid()))
    while True:
        try:
            time.sleep(0.01)
        except BaseException:  # noqa: BLE001, S110 - the point: only a kill stops this
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pool_hard_timeout_stops_a_runaway_call_off_the_main_thread(tmp_path):
    verify = load_verifier("test_reliability_verifiers:stuck_verifier", timeout_s=0.5)
    pid_file = tmp_path / "pid"
    box = {}

    def worker():
        start = time.perf_counter()
        box["score"] = verify(str(pid_file), "1")
        box["elapsed"] = time.perf_counter() - start

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30.0)
    assert not thread.is_alive()
    assert box["score"] == 0.0
    assert box["elapsed"] < 5.0  # 0.5 s limit + the kill grace; was 49.8 s against 5 s
    assert verify.stats.timeouts == 1
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5.0
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(pid)  # the call was stopped, not abandoned
    # the pool replaced the killed worker: the next call works
    assert load_verifier("gsm8k", timeout_s=0.5)("#### 4", "4") == 1.0


def test_pool_batch_matches_inline_and_counts_per_call():
    pooled = load_verifier("gsm8k")
    inline = load_verifier("gsm8k", isolation="inline")
    completions = [f"#### {i}" for i in range(50)] + [None, "\\boxed{2^{10}}"]
    answers = [str(i % 7) for i in range(50)] + ["1", "1024"]
    expected = [inline(c, a) for c, a in zip(completions, answers)]
    assert pooled.batch(completions, answers) == expected
    assert pooled.stats.as_dict() == {"calls": 52, "failures": 1, "timeouts": 0}


def test_unpicklable_verifiers_fall_back_to_the_inline_guard():
    verify = load_verifier(lambda c, a: float(c == a))
    assert verify.batch(["x", "y"], ["x", "x"]) == [1.0, 0.0]


# --- the fuzzer: a 1,000-case slice of `make fuzz` --------------------------------------------


def test_fuzz_slice_has_no_exceptions_timeouts_or_false_accepts():
    from nudgekit.rewards.fuzz import run_fuzz

    report = run_fuzz(cases=1_000, seed=0)
    assert report.cases >= 1_000
    assert set(report.verifiers) >= {"gsm8k", "numeric", "choice", "math", "tiny"}
    assert report.exceptions == 0
    assert report.timeouts == 0
    assert sum(report.false_accepts.values()) == 0, report.false_accepts
    assert report.p99_s < 5.0
