"""NuRL hint collection: leakage filter, hint store, sources, the regeneration loop, the pipeline."""

from __future__ import annotations

import json

import pytest

from nudgekit.data.problem import Problem
from nudgekit.engines.base import GenerationResult, Sample
from nudgekit.errors import NudgekitError
from nudgekit.models import ModelSpec
from nudgekit.nurl import (
    ChatRenderer,
    EngineHints,
    FileHints,
    HintRecord,
    HintsPipeline,
    HintStore,
    LeakFilter,
    OracleHints,
    SelfHints,
    contains_answer,
    leak_reason,
    normalize_answer,
)
from nudgekit.nurl.sources import filter_once
from nudgekit.rewards import load_verifier
from nudgekit.tracking import Tracker, read_jsonl
from nudgekit.zoo import tiny_problems

# ---------------------------------------------------------------- leakage filter


@pytest.mark.parametrize(
    ("hint", "answer", "leaks"),
    [
        ("The answer is 7.", "7", True),
        ("Try 7.0 as a check", "7", True),
        ("first compute 17 then halve", "7", False),  # 17 is not 7
        ("subtract: 5-3 gives it", "3", True),  # a sign does not hide a positive answer
        ("the total is 8,000 coins", "8000", True),
        ("it is -4 in the end", "-4", True),
        ("it is 4 in the end", "-4", False),
        ("think of $\\frac{1}{2}$ of the area", "\\frac{1}{2}", True),
        ("think of \\dfrac{1}{2}", "\\boxed{\\frac{1}{2}}", True),
        ("the area is x squared", "\\frac{1}{2}", False),
        ("inc then dec cancel out.", "7", False),
        ("The answer is Paris", "paris", True),
    ],
)
def test_contains_answer(hint, answer, leaks):
    assert contains_answer(hint, answer) is leaks


def test_normalize_answer_unboxes_and_strips():
    assert normalize_answer("  \\boxed{ \\dfrac{1}{2} }. ") == "\\frac{1}{2}"
    assert normalize_answer("$8,000$") == "8000"


def test_leak_reason_uses_the_verifier_first():
    tiny = load_verifier("tiny")
    assert leak_reason("Answer: 7", "7", tiny) == "verifier"
    assert leak_reason("Answer: 7", "7") == "contains_answer"
    assert leak_reason("   ", "7", tiny) == "empty"
    assert leak_reason("neg then neg cancel out.", "7", tiny) is None


def test_leak_filter_rejects_answer_bearing_hints_and_exempts_types():
    f = LeakFilter(verifier="tiny")
    assert f("Answer: 3", "3", "abstract") == "verifier"
    assert f("3 inc 4; 4 dbl 8", "8", "partial") == "contains_number"  # 8 is not stated
    assert f("3 inc 4; 4 dbl 8", "8", "full") is None  # full reveals the answer by design
    assert f("", "8", "answer") == "empty"
    assert LeakFilter(check_contains=False)("3 inc 4", "4", "abstract") is None


@pytest.mark.parametrize(
    "hint, answer, any_, stated",
    [
        ("the answer is 8", "8", "contains_answer", "contains_answer"),
        ("so x = 8.0 here", "8", "contains_answer", "contains_answer"),
        ("adding them gives 8,000", "8000", "contains_answer", "contains_answer"),
        ("use the 2 legs of the right triangle", "2", "contains_number", None),
        ("subtract: 5-3 first", "3", "contains_number", None),
        ("it is -4 in the end", "-4", "contains_answer", "contains_answer"),
        ("the capital is Paris", "paris", "contains_answer", "contains_answer"),
        ("cancel the pair", "2", None, None),
    ],
)
def test_number_rule_is_configurable_and_counted_apart(hint, answer, any_, stated):
    """`numbers="any"` rejects any answer-valued number (reason `contains_number`, counted apart
    from a stated answer); `"stated"` only a stated one; `"off"` no numeric check at all."""
    assert LeakFilter(numbers="any")(hint, answer) == any_
    assert LeakFilter(numbers="stated")(hint, answer) == stated
    off = LeakFilter(numbers="off")(hint, answer)
    assert off == ("contains_answer" if answer == "paris" else None)
    assert contains_answer(hint, answer, "stated") is (stated is not None)
    with pytest.raises(ValueError, match="numbers='some'"):
        LeakFilter(numbers="some")


def test_number_rule_rejections_are_counted_in_a_collection():
    """The small-integer rule's rejections land under their own reason in the counts."""
    problems = [Problem("p1", "q1", "2"), Problem("p2", "q2", "2")]
    hints = {"p1": "draw the 2 diagonals", "p2": "the answer is 2"}
    kw = dict(hint_type="abstract", source="file")
    got = filter_once(problems, hints, leak_filter=LeakFilter(numbers="any"), **kw)
    assert got.rejections == {"contains_number": 1, "contains_answer": 1}
    kept = filter_once(problems, hints, leak_filter=LeakFilter(numbers="stated"), **kw)
    assert [r.id for r in kept.records] == ["p1"] and kept.rejections == {"contains_answer": 1}


def test_oracle_hints_leakage_on_the_tiny_world():
    """Abstract oracle hints never leak; answer hints always do (when not exempt)."""
    problems = tiny_problems("train", level="medium", n=60)
    f = LeakFilter(verifier="tiny", exempt_types=())
    assert all(f(p.meta["hints"]["abstract"], p.answer) is None for p in problems)
    assert all(f(p.meta["hints"]["answer"], p.answer, "answer") for p in problems)


# ---------------------------------------------------------------- store


def test_store_roundtrip_with_provenance(tmp_path):
    store = HintStore(
        [
            HintRecord(
                id="a",
                hint="h1",
                type="abstract",
                source="self",
                attempts=2,
                rejections=["contains_answer"],
                model="m",
            ),
            HintRecord(id="b", hint="h2", source="oracle"),
        ]
    )
    path = store.save(tmp_path / "sub" / "hints.jsonl")
    back = HintStore.load(path)
    assert back.get("a") == store.get("a")
    assert back.hint("b") == "h2" and back.hint("zzz") is None
    assert "a" in back and len(back) == 2
    assert HintStore.from_state(back.state_dict()).hints() == {"a": "h1", "b": "h2"}
    assert back.stats()["source/self"] == 1.0
    assert not list(tmp_path.glob("sub/.*tmp"))  # the atomic write left no temp file


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a"}', "line 2: missing key 'hint'"),
        ("not json", "line 2: invalid JSON"),
        ('{"id": "a", "hint": "  "}', "line 2: 'hint' must be a non-empty string"),
        ('{"id": "a", "hint": "h", "attempts": 0}', "line 2: 'attempts' must be an int >= 1"),
        ("[1, 2]", "line 2: expected a JSON object"),
    ],
)
def test_store_load_names_the_bad_line(tmp_path, line, message):
    path = tmp_path / "hints.jsonl"
    path.write_text('{"id": "ok", "hint": "fine"}\n' + line + "\n")
    with pytest.raises(NudgekitError, match=message) as err:
        HintStore.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_store_load_missing_file(tmp_path):
    with pytest.raises(NudgekitError, match="no such file"):
        HintStore.load(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- oracle and file sources


def test_oracle_source_levels_and_filter():
    problems = tiny_problems("train", level="medium", n=20)
    abstract = OracleHints("abstract", LeakFilter(verifier="tiny")).collect(problems)
    assert len(abstract.records) == 20 and not abstract.dropped
    assert abstract.records[0].source == "oracle" and abstract.records[0].type == "abstract"
    answer = OracleHints("answer", LeakFilter(verifier="tiny", exempt_types=())).collect(problems)
    assert answer.records == [] and answer.rejections["contains_answer"] == 20
    with pytest.raises(NudgekitError, match="no meta"):
        OracleHints().collect([Problem("x", "q", "1")])
    with pytest.raises(NudgekitError, match="hint type 'vague'"):
        OracleHints("vague")


def test_file_source_reuses_a_store_by_path(tmp_path):
    problems = tiny_problems("train", level="medium", n=6)
    oracle = OracleHints("abstract").collect(problems).store
    oracle.add(HintRecord(id=problems[0].id, hint=f"Answer: {problems[0].answer}"))
    path = oracle.save(tmp_path / "hints.jsonl")
    got = FileHints(str(path), leak_filter=LeakFilter(verifier="tiny")).collect(
        [*problems, Problem("not-in-file", "q", "1")]
    )
    assert {r.id for r in got.records} == {p.id for p in problems[1:]}
    assert got.dropped == {problems[0].id: ["verifier"], "not-in-file": ["missing"]}
    assert all(r.source == "file" and r.model == str(path) for r in got.records)
    assert FileHints(str(path)).hints(problems[1:2]) == {
        problems[1].id: oracle.hint(problems[1].id)
    }


def test_file_source_bad_row(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"id": "a", "hint": "x"}\n{"id": "b"}\n')
    with pytest.raises(NudgekitError, match=r"h.jsonl row 2: 'hint' must be a non-empty string"):
        FileHints(str(path)).read()


# ---------------------------------------------------------------- generated sources


class ScriptedEngine:
    """An engine whose completion for a prompt is looked up by substring (records every call)."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, requests):
        self.calls.append(requests)
        out = []
        for req in requests:
            text = next(
                (v(req) if callable(v) else v for k, v in self.script.items() if k in req.prompt),
                "",
            )
            out.append(
                GenerationResult(
                    prompt_ids=[1], samples=[Sample(token_ids=[2], text=text, finish_reason="eos")]
                )
            )
        return out


def test_regeneration_loop_counts_and_drops():
    problems = [Problem("p1", "Q1", "7"), Problem("p2", "Q2", "5"), Problem("p3", "Q3", "9")]
    # p1 leaks on the greedy attempt, then writes a clean hint when sampled; p2 always leaks;
    # p3 is clean at once
    engine = ScriptedEngine(
        {
            "Explain:": "steps",
            "Q1": lambda r: "The answer is 7" if r.temperature == 0 else "look for a pair",
            "Q2": "it is 5",
            "Q3": "no pair cancels",
        }
    )
    source = EngineHints(
        engine,
        render=ChatRenderer(chat=False),
        leak_filter=LeakFilter(verifier="tiny"),
        max_attempts=3,
    )
    got = source.collect(problems)
    by_id = {r.id: r for r in got.records}
    assert by_id["p1"].attempts == 2 and by_id["p1"].rejections == ["contains_answer"]
    assert by_id["p3"].attempts == 1 and by_id["p3"].hint == "no pair cancels"
    assert got.dropped == {"p2": ["contains_answer"] * 3}
    assert got.rejections["contains_answer"] == 4 and got.generations == 2 + 3 + 1
    # one explain call, then one batched hint call per round (3, 2, 1 pending problems)
    assert [len(c) for c in engine.calls] == [3, 3, 2, 1]
    assert [c[0].temperature for c in engine.calls[1:]] == [0.0, 1.0, 1.0]
    assert by_id["p1"].explanation == "steps" and by_id["p1"].source == "engine"


def test_derived_types_without_templates():
    problems = [Problem("p1", "Q1", "7")]
    engine = ScriptedEngine({"Explain:": "a\nb\nc\nd\nAnswer: 7"})
    kw = dict(render=ChatRenderer(chat=False), leak_filter=LeakFilter(verifier="tiny"))
    partial = EngineHints(engine, type="partial", hint_templates={}, **kw).collect(problems)
    assert partial.records[0].hint == "a; b"
    full = EngineHints(engine, type="full", hint_templates={}, **kw).collect(problems)
    assert full.records[0].hint.endswith("Answer: 7")  # exempt from the leak filter
    calls = len(engine.calls)
    answer = EngineHints(engine, type="answer", hint_templates={}, **kw).collect(problems)
    assert answer.records[0].hint == "The answer is 7." and len(engine.calls) == calls
    with pytest.raises(NudgekitError, match="needs hint_templates.abstract"):
        EngineHints(engine, type="abstract", hint_templates={}, **kw)


def test_truncated_hints_are_rejected(tiny_qwen_dir):
    """A real (random) model with a 1-token hint budget: every hint is cut off (or empty)."""
    from nudgekit.engines.hf import HFEngine

    spec = ModelSpec(str(tiny_qwen_dir))
    problems = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(3)]
    source = EngineHints(
        HFEngine(spec),
        ChatRenderer(spec),
        hint_max_new_tokens=1,
        explain_max_new_tokens=4,
        max_attempts=2,
    )
    got = source.collect(problems)
    assert got.records == [] and set(got.dropped) == {"p0", "p1", "p2"}
    assert got.rejections["truncated"] + got.rejections["empty"] == 6 == got.generations
    assert got.rejections["truncated"] > 0


def test_self_hints_with_a_real_model_are_reproducible(tiny_qwen_dir):
    """A random model never ends a hint by itself (every attempt would be truncated and both
    runs would return nothing); stop strings end its hints, so real hints are compared."""
    spec = ModelSpec(str(tiny_qwen_dir))
    problems = [Problem(f"p{i}", f"What is {i} + 1?", str(i + 1)) for i in range(3)]
    kw = dict(
        leak_filter=LeakFilter(verifier="numeric"),
        max_attempts=2,
        explain_max_new_tokens=6,
        hint_max_new_tokens=12,
        seed=3,
        stop=["e", "a", "o"],
    )
    a = SelfHints(spec, **kw).collect(problems)
    b = SelfHints(spec, **kw).collect(list(reversed(problems)))
    hints = {r.id: r.hint for r in a.records}
    assert sorted(hints) == ["p0", "p1", "p2"] and all(h.strip() for h in hints.values())
    assert hints == {r.id: r.hint for r in b.records}
    assert a.dropped == b.dropped == {}
    assert all(r.source == "self" and r.model == str(tiny_qwen_dir) for r in a.records)
    for r in a.records:
        assert leak_reason(r.hint, dict((p.id, p.answer) for p in problems)[r.id]) is None


# ---------------------------------------------------------------- the pipeline


def test_hints_pipeline_writes_store_report_and_table(tmp_path):
    problems = tiny_problems("train", level="medium", n=12)
    run_dir = tmp_path / "run"
    tracker = Tracker(run_dir, mode="disabled")
    pipe = HintsPipeline(problems, OracleHints("partial", LeakFilter(verifier="tiny")))
    metrics = pipe.run(tracker=tracker, run_dir=run_dir)
    tracker.finish()
    store = HintStore.load(run_dir / "hints.jsonl")
    report = json.loads((run_dir / "hints_report.json").read_text())
    assert metrics["hints/accepted"] == len(store) == 12 - len(report["dropped"])
    assert metrics["hints/yield"] == len(store) / 12
    # partial hints are intermediate steps: an answer-valued number in them is not stated
    assert metrics.get("hints/rejected_contains_number", 0) == len(report["dropped"]) > 0
    rows = read_jsonl(run_dir / "tables" / "hints_samples.jsonl")
    assert len(rows) == len(store) and rows[0]["type"] == "partial"
    with pytest.raises(NudgekitError, match="empty"):
        HintsPipeline([], OracleHints())


def test_hint_lift_counts_zero_pass_problems_lifted():
    from nudgekit.nurl import HintLift

    problems = [Problem("a", "Qa", "1"), Problem("b", "Qb", "2"), Problem("c", "Qc", "3")]
    # a is solved un-hinted; b only with its hint; c never (and has no hint)
    engine = ScriptedEngine(
        {"Qa": "Answer: 1", "Qb\nHint": "Answer: 2", "Qb": "Answer: 0", "Qc": "Answer: 0"}
    )
    lift = HintLift(
        engine,
        prompt=lambda p, h=None: p.question + (f"\nHint: {h}" if h else ""),
        verifier=load_verifier("tiny"),
        n=1,
    )
    store = HintStore([HintRecord(id="b", hint="look")])
    m = lift.measure(problems, store)
    assert m["lift/zero_pass_frac"] == pytest.approx(2 / 3)
    assert m["lift/zero_pass_with_hint"] == 1.0
    assert m["lift/lifted_frac"] == 0.5 and m["lift/hinted_pass@1"] == 1.0
