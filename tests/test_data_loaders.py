"""`load_problems` over real `datasets` reads of local json/jsonl/parquet, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from nudgekit.data import Problem, content_id, format_number, load_problems
from nudgekit.data.sources import is_local
from nudgekit.errors import NudgekitError

ROWS = [
    {"uid": "p1", "question": "What is 2+3?", "answer": "5", "level": 1},
    {"uid": "p2", "question": "What is 7*6?", "answer": 42, "level": 2},
    {"uid": "p3", "question": "Half of 5?", "answer": 2.5, "level": 3},
    {"uid": "p4", "question": "What is 10-2?", "answer": 8.0, "level": 1},
]
EXPECTED_ANSWERS = ["5", "42", "2.5", "8"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _one_line_error(source: str | Path, **kwargs) -> str:
    with pytest.raises(NudgekitError) as err:
        load_problems(str(source), **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def _in_all_formats(tmp_path: Path, rows: list[dict]) -> dict[str, Path]:
    jsonl = _write_jsonl(tmp_path / "data.jsonl", rows)
    as_json = tmp_path / "data.json"
    as_json.write_text(json.dumps(rows), encoding="utf-8")
    parquet = tmp_path / "data.parquet"
    # Parquet needs one type per column; the numeric answers become strings there.
    datasets.Dataset.from_list([{**r, "answer": str(r["answer"])} for r in rows]).to_parquet(
        str(parquet)
    )
    return {"jsonl": jsonl, "json": as_json, "parquet": parquet}


def test_same_problems_from_jsonl_json_and_parquet(tmp_path: Path) -> None:
    files = _in_all_formats(tmp_path, ROWS)
    loaded = {fmt: load_problems(str(path), id_key="uid") for fmt, path in files.items()}
    for fmt in ("jsonl", "json"):
        assert [p.answer for p in loaded[fmt]] == EXPECTED_ANSWERS
    assert [p.answer for p in loaded["parquet"]] == ["5", "42", "2.5", "8.0"]
    for problems in loaded.values():
        assert [p.id for p in problems] == ["p1", "p2", "p3", "p4"]
        assert [p.question for p in problems] == [r["question"] for r in ROWS]
        assert [p.meta for p in problems] == [{"level": r["level"]} for r in ROWS]


def test_content_ids_without_id_key(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "x.jsonl", ROWS)
    problems = load_problems(str(path))
    assert [p.id for p in problems] == [content_id(r["question"]) for r in ROWS]
    assert problems[0].meta == {"uid": "p1", "level": 1}
    reversed_path = _write_jsonl(tmp_path / "y.jsonl", ROWS[::-1])
    assert {p.id: p for p in load_problems(str(reversed_path))} == {p.id: p for p in problems}
    prefixed = load_problems(str(path), id_prefix="mine", limit=2)
    assert [p.id for p in prefixed] == [f"mine/{p.id}" for p in problems[:2]]


def test_custom_keys_and_limit(tmp_path: Path) -> None:
    rows = [{"q": f"{i}+1?", "gold": i + 1, "key": i} for i in range(10)]
    path = _write_jsonl(tmp_path / "custom.jsonl", rows)
    problems = load_problems(str(path), question_key="q", answer_key="gold", id_key="key", limit=3)
    assert problems == [Problem(str(i), f"{i}+1?", str(i + 1)) for i in range(3)]
    assert load_problems(str(path), question_key="q", answer_key="gold", limit=0) == []


def test_folder_picks_split_files(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", ROWS[:2])
    _write_jsonl(tmp_path / "test.jsonl", ROWS[2:])
    (tmp_path / "data").mkdir()
    # The hub's sharded layout: data/<split>-00000-of-00002.parquet.
    for shard, rows in enumerate((ROWS[:1], ROWS[1:3])):
        frame = datasets.Dataset.from_list([{**r, "answer": str(r["answer"])} for r in rows])
        frame.to_parquet(str(tmp_path / "data" / f"validation-0000{shard}-of-00002.parquet"))
    assert [p.id for p in load_problems(str(tmp_path), id_key="uid")] == ["p1", "p2"]
    assert [p.id for p in load_problems(str(tmp_path), split="test", id_key="uid")] == ["p3", "p4"]
    shards = load_problems(str(tmp_path), split="validation", id_key="uid", limit=2)
    assert [p.id for p in shards] == ["p1", "p2"]
    message = _one_line_error(tmp_path, split="dev")
    assert f"{tmp_path}: no .json/.jsonl/.parquet file for split 'dev' (found: " in message
    assert "train.jsonl" in message


def test_missing_field_names_file_row_and_field(tmp_path: Path) -> None:
    rows = [dict(ROWS[0]), {"uid": "p2", "question": "No answer here?"}, dict(ROWS[2])]
    path = _write_jsonl(tmp_path / "x.jsonl", rows)
    assert _one_line_error(path) == (
        f"{path} row 2: missing field 'answer' (row has: uid, question)"
    )
    assert _one_line_error(path, question_key="prompt").startswith(
        f"{path} row 1: missing field 'prompt'"
    )
    assert _one_line_error(path, id_key="nope").startswith(f"{path} row 1: missing field 'nope'")


def test_wrong_type_names_file_row_and_field(tmp_path: Path) -> None:
    rows = [dict(ROWS[0]), dict(ROWS[1]), {**ROWS[2], "answer": ["2", "3"]}]
    path = _write_jsonl(tmp_path / "x.jsonl", rows)
    assert _one_line_error(path) == (
        f"{path} row 3: field 'answer' has type list, expected str/number"
    )
    bad_question = _write_jsonl(tmp_path / "q.jsonl", [{"question": 12, "answer": "1"}])
    assert _one_line_error(bad_question) == (
        f"{bad_question} row 1: field 'question' has type int, expected str"
    )
    empty = _write_jsonl(tmp_path / "e.jsonl", [{"question": "q?", "answer": "  "}])
    assert _one_line_error(empty) == f"{empty} row 1: field 'answer' is empty"
    as_bool = _write_jsonl(tmp_path / "b.jsonl", [{"question": "q?", "answer": True}])
    assert "field 'answer' has type bool" in _one_line_error(as_bool)
    bad_id = _write_jsonl(tmp_path / "i.jsonl", [{"question": "q?", "answer": 1, "id": [1]}])
    assert "row 1: field 'id' has type list, expected str/int" in _one_line_error(
        bad_id, id_key="id"
    )


def test_wrong_type_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    datasets.Dataset.from_list([{"question": "q?", "answer": {"value": 1}}]).to_parquet(str(path))
    assert (
        _one_line_error(path) == f"{path} row 1: field 'answer' has type dict, expected str/number"
    )


def test_broken_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"question": "x", "answer": \n')
    assert _one_line_error(path).startswith(f"{path}: line 2: invalid JSON (")
    not_objects = tmp_path / "list.json"
    not_objects.write_text("[1, 2]")
    # datasets reads a list of scalars as one "text" column; the error still names file and row.
    assert _one_line_error(not_objects).startswith(f"{not_objects} row 1: missing field 'question'")


def test_conflicting_ids_are_refused_exact_duplicates_suffixed(tmp_path: Path) -> None:
    same = _write_jsonl(tmp_path / "dup.jsonl", [ROWS[0], ROWS[0], ROWS[0]])
    assert [p.id for p in load_problems(str(same), id_key="uid")] == ["p1", "p1#2", "p1#3"]
    clash = _write_jsonl(tmp_path / "clash.jsonl", [ROWS[0], {**ROWS[1], "uid": "p1"}])
    assert _one_line_error(clash, id_key="uid") == (
        f"{clash} row 2: id 'p1' already used by {clash} row 1 for a different question/answer"
    )


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.jsonl"
    assert _one_line_error(missing) == f"{missing}: no such file or directory"
    assert _one_line_error("./data/absent.parquet").startswith("./data/absent.parquet: no such")
    csv = tmp_path / "x.csv"
    csv.write_text("question,answer\nq,1\n")
    assert "unsupported file type '.csv'" in _one_line_error(csv)


def test_source_classification(tmp_path: Path) -> None:
    assert not is_local("openai/gsm8k") and not is_local("gsm8k")
    assert is_local("x.jsonl") and is_local("./gsm8k") and is_local("a/b/c") and is_local("/abs")
    assert is_local(str(tmp_path))


def test_hub_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # closed port: refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    message = _one_line_error("openai/gsm8k", name="main", split="test")
    assert time.perf_counter() - start < 10
    assert message.startswith("hub dataset 'openai/gsm8k' (main) split 'test': cannot reach ")
    assert "HF_HUB_OFFLINE=1" in message


def test_hub_offline_mode_fails_fast_with_one_line() -> None:
    # Offline mode is read when datasets is imported, so it is checked in a fresh interpreter.
    code = (
        "from nudgekit.data import load_problems\n"
        "from nudgekit.errors import NudgekitError\n"
        "try:\n    load_problems('nudgekit-test/no-such-dataset')\n"
        "except NudgekitError as e:\n    print('ERR', e)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(repo)}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.perf_counter() - start
    lines = [line for line in out.stdout.splitlines() if line.startswith("ERR ")]
    assert lines, out.stdout + out.stderr
    assert lines[0].startswith("ERR hub dataset 'nudgekit-test/no-such-dataset' split 'train': ")
    assert elapsed < 60


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (8.0, "8"),
        (8, "8"),
        (2.5, "2.5"),
        (-1.0, "-1"),
        (0.1, "0.1"),
        (1e20, "100000000000000000000"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


def test_content_id_is_sha1_prefix() -> None:
    assert content_id("abc") == "a9993e364706"  # sha1("abc") = a9993e36 4706816a ...
    assert content_id("abc", "gsm8k") == "gsm8k/a9993e364706"
