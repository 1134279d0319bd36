"""Unit tests for nudgekit.rewards: verifiers, the never-raise / never-hang guard, reward fns."""

from __future__ import annotations

import pickle
import signal
import threading
import time

import pytest

from nudgekit.errors import NudgekitError
from nudgekit.rewards import (
    VERIFIERS,
    CombinedReward,
    FormatReward,
    Verifier,
    VerifierReward,
    load_verifier,
)
from nudgekit.rewards.extract import choice_letter, final_number, last_boxed


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("3 + 4 = 7\n#### 7", "7", 1.0),
        ("She has 1,200 dollars.\n#### 1,200", "1200", 1.0),
        ("The answer is $18.", "18", 1.0),
        ("so the total is 18.00", "18", 1.0),
        ("A: 42 apples", "42", 1.0),
        ("Answer: -5", "-5", 1.0),
        ("The answer is 6.5", "13/2", 1.0),
        ("The answer is \\boxed{\\frac{13}{2}}", "6.5", 1.0),
        ("#### 7", "Janet has 3 + 4 = 7 eggs.\n#### 7", 1.0),  # gold given as a full solution
        ("3 + 4 = 7 ... wait, 8\n#### 8", "7", 0.0),
        ("#### 17.99", "18", 0.0),  # gsm8k is exact: a near miss is wrong
        ("I don't know", "7", 0.0),
        ("", "7", 0.0),
        ("The answer is 7", "not a number", 0.0),
    ],
)
def test_gsm8k_verifier(completion, answer, expected):
    assert load_verifier("gsm8k")(completion, answer) == expected


def test_final_number_prefers_anchors_over_the_last_number():
    assert final_number("#### 12\nThat took 3 steps.") == "12"
    assert final_number("The answer is 5 and it took 3 steps.") == "5"
    assert final_number("16 - 3 - 4 = 9") == "9"  # minus signs between numbers are not signs
    assert final_number("The answer is below.\nSo 6 * 7 = 42") == "42"  # anchor without number
    assert final_number("no numbers here") is None


def test_numeric_verifier_uses_a_relative_tolerance():
    verify = load_verifier("numeric")
    assert verify("The answer is 0.33333", "1/3") == 1.0
    assert verify("The answer is 0.33", "1/3") == 0.0
    assert verify("about 25%", "25") == 1.0
    assert verify("Answer: 1,000,000.0", "1e6") == 1.0  # scientific notation gold is read
    assert verify("Answer: 1,000,000.0", "1000000") == 1.0


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("The answer is (C).", "C", 1.0),
        ("Answer: B", "(B)", 1.0),
        ("\\boxed{\\text{(D)}}", "d", 1.0),
        ("E", "E", 1.0),
        ("Between (A) and (B), I pick (B)", "B", 1.0),
        ("The answer is a function of x", "A", 0.0),  # lowercase 'a' is a word, not a choice
        ("A cat sat on the mat.", "A", 0.0),  # a sentence-initial 'A' is not a choice
        ("The answer is (C).", "F", 0.0),  # gold outside A-E never matches
    ],
)
def test_choice_verifier(completion, answer, expected):
    assert load_verifier("choice")(completion, answer) == expected


def test_choice_letter_and_last_boxed_helpers():
    assert choice_letter("option: e") is None
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{2}{3}}") == "\\frac{2}{3}"
    assert last_boxed("cut off \\boxed{\\frac{2}{3") is None


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac12", 1.0),
        ("first \\boxed{3}, no wait: \\boxed{4}", "4", 1.0),  # the last box wins
        ("first \\boxed{3}, no wait: \\boxed{4}", "3", 0.0),
        ("The answer is $\\sqrt{8}$", "2\\sqrt{2}", 1.0),  # no box: math-verify searches
        (
            "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            1.0,
        ),
        ("total: \\boxed{\\$18.90}", "\\$18.90", 1.0),  # escaped dollars are not delimiters
        ("\\boxed{5}", "6", 0.0),
        ("no math at all", "6", 0.0),
    ],
)
def test_math_verifier(completion, answer, expected):
    assert load_verifier("math")(completion, answer) == expected


@pytest.mark.parametrize("name", ["gsm8k", "numeric", "choice", "math"])
@pytest.mark.parametrize(
    ("completion", "answer"),
    [(None, "1"), ("1", None), (["1"], "1"), (b"1", "1"), ("\\boxed{", "1"), ("}}}{{{", "{")],
)
def test_malformed_input_scores_zero_without_raising(name, completion, answer):
    assert load_verifier(name)(completion, answer) == 0.0


def test_malformed_input_is_counted_as_failure():
    verify = load_verifier("gsm8k")
    verify(None, "1")
    verify("#### 1", "1")
    assert verify.stats.as_dict() == {"calls": 2, "failures": 1, "timeouts": 0}


def test_numeric_answers_are_accepted_as_gold():
    # json/parquet columns often hold numbers; they are not malformed
    verify = load_verifier("gsm8k")
    assert verify("#### 18", 18) == 1.0
    assert verify.stats.failures == 0


@pytest.mark.parametrize("name", ["gsm8k", "numeric", "choice", "math"])
def test_huge_input_is_bounded(name):
    huge = "(1+" * 200_000 + "\\boxed{" * 5_000 + " 7 " * 100_000
    verify = load_verifier(name, timeout_s=3.0)
    start = time.perf_counter()
    assert verify(huge, "7") in (0.0, 1.0)
    assert time.perf_counter() - start < 5.0
    assert verify.stats.calls == 1


def _spin(completion: str, answer: str) -> float:
    """A verifier that runs far past any timeout used here and swallows ordinary exceptions,
    like a stuck sympy call. It does end (after 10 s) so an abandoned worker thread dies."""
    deadline = time.perf_counter() + 10.0
    while time.perf_counter() < deadline:
        try:
            time.sleep(0.001)
        except Exception:  # noqa: BLE001, S110 - the point: the guard must still get out
            pass
    return 1.0


def test_timeout_in_main_thread_scores_zero_and_restores_signal_state():
    handler_before = signal.getsignal(signal.SIGALRM)
    verify = Verifier(_spin, "spin", timeout_s=0.2)
    start = time.perf_counter()
    assert verify("x", "y") == 0.0
    assert time.perf_counter() - start < 2.0
    assert verify.stats.as_dict() == {"calls": 1, "failures": 0, "timeouts": 1}
    assert signal.getsignal(signal.SIGALRM) is handler_before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_timeout_in_worker_thread_does_not_hang_the_caller():
    verify = Verifier(_spin, "spin", timeout_s=0.2)
    box = {}

    def worker():
        start = time.perf_counter()
        box["score"] = verify("x", "y")
        box["elapsed"] = time.perf_counter() - start

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5.0)
    assert not thread.is_alive()
    assert box["score"] == 0.0 and box["elapsed"] < 2.0
    assert verify.stats.timeouts == 1


def test_verifiers_work_from_worker_threads():
    # math-verify's own signal timeouts would raise off the main thread; ours must not
    verify = load_verifier("math")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(verify("\\boxed{\\frac{2}{4}}", "1/2")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [1.0] * 4
    assert verify.stats.as_dict() == {"calls": 4, "failures": 0, "timeouts": 0}


def test_raising_and_odd_valued_raw_verifiers_are_contained():
    def boom(completion, answer):
        raise RuntimeError("bug")

    assert Verifier(boom, "boom")("a", "b") == 0.0
    assert Verifier(lambda c, a: float("nan"), "nan")("a", "b") == 0.0
    assert Verifier(lambda c, a: True, "bool")("a", "b") == 1.0
    assert Verifier(lambda c, a: 3.0, "big")("a", "b") == 1.0  # clipped to [0, 1]


def test_reset_stats_and_pickling():
    verify = load_verifier("gsm8k")
    verify("#### 1", "1")
    assert verify.reset_stats().calls == 1
    assert verify.stats.calls == 0
    clone = pickle.loads(pickle.dumps(verify))
    assert clone("#### 2", "2") == 1.0 and clone.stats.calls == 1


def test_unknown_verifier_name_is_one_line_listing_known_names():
    with pytest.raises(NudgekitError) as info:
        load_verifier("gsm8")
    message = str(info.value)
    assert "\n" not in message and "'gsm8'" in message
    for name in VERIFIERS:
        assert name in message


def test_dotted_path_verifiers():
    verify = load_verifier("nudgekit.rewards.verifiers:verify_gsm8k")
    assert verify("#### 3", "3") == 1.0
    with pytest.raises(NudgekitError, match="cannot import"):
        load_verifier("no_such_pkg.mod:fn")
    with pytest.raises(NudgekitError, match="no function"):
        load_verifier("nudgekit.rewards.verifiers:nope")


def test_tiny_verifier_is_registered():
    pytest.importorskip("nudgekit.rewards.tiny", reason="the zoo's tiny verifier is not written")
    verify = load_verifier("tiny")
    assert verify("3 + 4 = 7\nAnswer: 7", "7") == 1.0
    assert verify("3 + 4 = 7\nAnswer: 8", "7") == 0.0


def test_verifier_reward_reads_the_answer_column_and_chat_completions():
    reward = VerifierReward("gsm8k", answer_key="gold")
    chat = [[{"role": "assistant", "content": "#### 5"}], [{"role": "assistant", "content": "6"}]]
    assert reward(chat, gold=["5", "5"], prompt=["p", "p"]) == [1.0, 0.0]
    assert reward(["#### 5"], gold=[5]) == [1.0]
    assert reward.__name__ == "gsm8k_reward"
    with pytest.raises(NudgekitError, match="column 'gold' missing"):
        reward(["#### 5"], answer=["5"])
    with pytest.raises(NudgekitError, match="2 completions but 1"):
        reward(["a", "b"], gold=["5"])


def test_format_reward():
    reward = FormatReward()
    completions = ["so \\boxed{4}", "#### 4", "The answer is 4", "Answer: 4", "it is 4"]
    assert reward(completions) == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert FormatReward(r"^Answer: \d+$")(["Answer: 4", "Answer: x"]) == [1.0, 0.0]
    with pytest.raises(NudgekitError, match="bad pattern"):
        FormatReward("(")


def test_combined_reward_weights_and_components():
    reward = CombinedReward(["gsm8k", FormatReward()], weights=[1.0, 0.25])
    completions = ["The answer is 5", "#### 6", "5"]
    answers = ["5", "5", "5"]
    # correctness + 0.25 * format: (1 + .25), (0 + .25), (1 + 0)
    assert reward(completions, answer=answers) == [1.25, 0.25, 1.0]
    parts = reward.components(completions, answer=answers)
    assert parts == {"gsm8k_reward": [1.0, 0.0, 1.0], "format_reward": [1.0, 1.0, 0.0]}
    assert CombinedReward(["gsm8k"])(["#### 5"], answer=["5"]) == [1.0]


def test_combined_reward_rejects_bad_config():
    with pytest.raises(NudgekitError, match="2 rewards but 1 weights"):
        CombinedReward(["gsm8k", "math"], weights=[1.0])
    with pytest.raises(NudgekitError, match="finite"):
        CombinedReward(["gsm8k"], weights=[float("nan")])
    with pytest.raises(NudgekitError, match="empty"):
        CombinedReward([])
    with pytest.raises(NudgekitError, match="returned 1 scores for 2"):
        CombinedReward([lambda completions, **kw: [1.0]])(["a", "b"])


def test_combined_reward_from_hydra_config():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "_target_": "nudgekit.rewards.CombinedReward",
            "rewards": [
                {"_target_": "nudgekit.rewards.VerifierReward", "verifier": "gsm8k"},
                {"_target_": "nudgekit.rewards.FormatReward"},
            ],
            "weights": [1.0, 0.5],
        }
    )
    reward = instantiate(cfg)
    assert reward(["The answer is 5", "5"], answer=["5", "4"]) == [1.5, 0.0]
    verifier = instantiate({"_target_": "nudgekit.rewards.load_verifier", "name": "numeric"})
    assert isinstance(verifier, Verifier) and verifier("0.5", "1/2") == 1.0
