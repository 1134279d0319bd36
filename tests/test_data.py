"""Benchmark registry over the real files in ../shared/data: counts, ids, answers, hub fallback."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from nudgekit.data import (
    BENCHMARKS,
    Problem,
    default_data_dir,
    load_benchmark,
    register_benchmark,
    register_benchmark_loader,
)
from nudgekit.errors import NudgekitError


def _shared_data() -> Path:
    env = os.environ.get("NUDGEKIT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA = _shared_data()
needs_data = pytest.mark.skipif(
    not (DATA / "gsm8k" / "test.jsonl").exists(),
    reason=f"shared benchmark files not found at {DATA} (set NUDGEKIT_DATA)",
)

# MultiArith has 600 records; `wc -l` says 599 because its last line has no trailing newline.
COUNTS = {
    "gsm8k": 1319,
    "math500": 500,
    "svamp": 1000,
    "multiarith": 600,
    "aime24": 30,
    "amc23": 40,
}


def _load(name: str, **kwargs) -> list[Problem]:
    return load_benchmark(name, str(DATA / name / "test.jsonl"), **kwargs)


@needs_data
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_benchmark_counts_ids_and_answers(name: str) -> None:
    problems = _load(name)
    assert len(problems) == COUNTS[name]
    ids = [p.id for p in problems]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith(f"{name}/") for i in ids)
    assert all(isinstance(p.answer, str) and p.answer.strip() == p.answer != "" for p in problems)
    assert all(isinstance(p.question, str) and p.question for p in problems)
    assert all(p.hint is None for p in problems)
    # Stable across loads, in order and content.
    again = _load(name)
    assert [(p.id, p.question, p.answer) for p in again] == [
        (p.id, p.question, p.answer) for p in problems
    ]


@needs_data
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_benchmark_ids_independent_of_row_order(name: str, tmp_path: Path) -> None:
    lines = (DATA / name / "test.jsonl").read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(lines)
    shuffled = tmp_path / name / "test.jsonl"
    shuffled.parent.mkdir()
    shuffled.write_text("\n".join(lines) + "\n", encoding="utf-8")

    original = {p.id: (p.question, p.answer) for p in _load(name)}
    reordered = load_benchmark(name, str(shuffled))
    assert [p.id for p in reordered] != list(original)  # the order really changed
    assert {p.id: (p.question, p.answer) for p in reordered} == original
    # A folder path resolves to the test split file inside it.
    assert {p.id for p in load_benchmark(name, str(shuffled.parent))} == set(original)


@needs_data
def test_default_path_comes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUDGEKIT_DATA", str(DATA))
    assert default_data_dir() == DATA
    assert len(load_benchmark("aime24")) == 30
    monkeypatch.delenv("NUDGEKIT_DATA")
    assert default_data_dir() == Path(__file__).resolve().parents[1].parent / "shared" / "data"


@needs_data
def test_gsm8k_answer_is_number_after_hashes() -> None:
    problems = _load("gsm8k")
    first = problems[0]
    assert first.question.startswith("Janet’s ducks lay 16 eggs")
    assert first.answer == "18"
    assert first.meta["solution"].endswith("#### 18")
    # Thousands separators are dropped: the source writes "#### 2,125".
    comma = next(p for p in problems if p.meta["solution"].endswith("#### 2,125"))
    assert comma.answer == "2125"
    assert all("," not in p.answer and "#" not in p.answer for p in problems)


@needs_data
def test_source_field_mapping() -> None:
    math = _load("math500")[0]
    assert math.id == "math500/test/precalculus/807.json"
    assert math.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math.meta["subject"] == "Precalculus" and math.meta["level"] == 2
    assert "\\boxed" in math.meta["solution"]

    svamp = _load("svamp")[0]
    assert svamp.id == "svamp/chal-777"
    assert svamp.answer == "145"  # 145.0 in the source
    assert svamp.question.endswith("into 93 groups How big is each group of bananas?")

    aime = {p.id: p for p in _load("aime24")}
    assert aime["aime24/60"].answer == "204"
    padded = [p for p in aime.values() if p.meta["answer_raw"].startswith("0")]
    assert padded and all(p.answer == p.meta["answer_raw"].lstrip("0") for p in padded)

    amc = _load("amc23")[0]
    assert (amc.id, amc.answer) == ("amc23/0", "27")
    assert amc.question.startswith("Cities $A$ and $B$ are $45$ miles apart.")


@needs_data
def test_multiarith_exact_duplicates_get_suffixed_ids() -> None:
    problems = _load("multiarith")
    assert problems[0].answer == "39"
    suffixed = [p for p in problems if "#" in p.id]
    assert len(suffixed) == 20  # the file repeats 20 (question, answer) pairs verbatim
    by_id = {p.id: p for p in problems}
    for dup in suffixed:
        base = by_id[dup.id.split("#")[0]]
        assert (base.question, base.answer) == (dup.question, dup.answer)


@needs_data
def test_limit_keeps_source_order() -> None:
    assert [p.id for p in _load("svamp", limit=5)] == [p.id for p in _load("svamp")[:5]]
    assert _load("svamp", limit=0) == []


def test_unknown_benchmark_lists_known_names() -> None:
    with pytest.raises(NudgekitError) as err:
        load_benchmark("gsm9k")
    message = str(err.value)
    assert "\n" not in message
    for name in COUNTS:
        assert name in message


def test_missing_benchmark_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(NudgekitError, match=f"^{missing}: no such file or directory$"):
        load_benchmark("gsm8k", str(missing))


def test_bad_benchmark_row_names_file_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    rows = [
        {"question": "1+1?", "answer": "so 2\n#### 2"},
        {"question": "2+2?", "answer": "it is 4"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(NudgekitError) as err:
        load_benchmark("gsm8k", str(path))
    assert str(err.value) == f"{path} row 2: field 'answer' has no '#### <number>' final line"

    svamp = tmp_path / "svamp.jsonl"
    svamp.write_text(json.dumps({"Body": "b", "Question": "q", "Answer": [1], "ID": "x"}) + "\n")
    with pytest.raises(NudgekitError, match=r"svamp\.jsonl row 1: field 'Answer' has type list"):
        load_benchmark("svamp", str(svamp))


def test_conflicting_source_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "amc.jsonl"
    rows = [{"id": 1, "problem": "a?", "answer": 1.0}, {"id": 1, "problem": "b?", "answer": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(NudgekitError, match=r"row 2: id 'amc23/1' already used by .*row 1"):
        load_benchmark("amc23", str(path))


def test_hub_fallback_when_shared_files_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    # No local file, hub unreachable (closed local port): fail fast, naming the hub dataset.
    monkeypatch.setenv("NUDGEKIT_DATA", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    assert BENCHMARKS["gsm8k"].hub == "openai/gsm8k"
    with pytest.raises(NudgekitError, match=r"^hub dataset 'openai/gsm8k' \(main\) split 'test'"):
        load_benchmark("gsm8k")


def test_every_builtin_records_a_hub_fallback() -> None:
    for name in COUNTS:
        assert BENCHMARKS[name].hub and "/" in BENCHMARKS[name].hub


def test_register_row_converter_and_loader(tmp_path: Path) -> None:
    @register_benchmark("toy_rows", filename="toy.jsonl")
    def toy(row, where):  # noqa: ANN001 - registry signature
        return Problem(f"toy_rows/{row['k']}", row["q"], str(row["a"]))

    @register_benchmark_loader("toy_generated")
    def generated(path, limit):  # noqa: ANN001 - registry signature
        problems = [Problem(f"toy_generated/{i}", f"{i}+1?", str(i + 1)) for i in range(5)]
        return problems[:limit] if limit is not None else problems

    try:
        path = tmp_path / "toy.jsonl"
        path.write_text(json.dumps({"k": "a", "q": "q?", "a": 3}) + "\n")
        assert load_benchmark("toy_rows", str(path)) == [Problem("toy_rows/a", "q?", "3")]
        assert [p.answer for p in load_benchmark("toy_generated", limit=2)] == ["1", "2"]
        with pytest.raises(ValueError, match="already registered"):
            register_benchmark("toy_rows")(toy)
        register_benchmark("toy_rows", overwrite=True)(toy)  # explicit replacement is allowed
    finally:
        BENCHMARKS.pop("toy_rows", None)
        BENCHMARKS.pop("toy_generated", None)
