"""`load_problems`: any json/jsonl/parquet file, folder or hub dataset -> `list[Problem]`.

The generic path for user data: name the question/answer (and optionally id) columns, get
validated `Problem`s whose other columns land in `meta`. Without an id column the id is a content
hash of the question, so it is the same however the file is ordered or named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.data.rows import answer_field, content_id, dedupe_ids, id_field, text_field
from nudgekit.data.sources import read_source
from nudgekit.errors import NudgekitError


def load_problems(
    source: str,
    *,
    split: str = "train",
    question_key: str = "question",
    answer_key: str = "answer",
    id_key: str | None = None,
    limit: int | None = None,
    name: str | None = None,
    id_prefix: str | None = None,
) -> list[Problem]:
    """Load problems from a local file/folder or a hub dataset.

    Args:
        source: a .json/.jsonl/.parquet file, a folder with `<split>*` data files, or a hub id.
        split: split to read from a folder or hub dataset.
        question_key: column holding the question text.
        answer_key: column holding the gold answer (string or number; `8.0` becomes `"8"`).
        id_key: column holding a source id; None derives ids from sha1(question).
        limit: keep only the first `limit` rows in source order (None keeps all).
        name: hub dataset configuration name.
        id_prefix: optional `prefix/` put in front of every id (e.g. a dataset name).

    Returns:
        Problems in source order, with unique ids. Row numbers in errors count from 1.

    Raises:
        NudgekitError: missing file, unreachable hub, or a bad row (one line naming file, row and
            field).
    """
    if limit is not None and limit < 0:
        raise NudgekitError(f"{source}: limit must be >= 0, got {limit}")
    problems: list[Problem] = []
    wheres: list[str] = []
    for label, dataset in read_source(source, split=split, name=name):
        remaining = None if limit is None else limit - len(problems)
        if remaining is not None and remaining <= 0:
            break
        rows = dataset.select(range(min(remaining, len(dataset)))) if remaining else dataset
        for row_no, row in enumerate(rows, start=1):
            where = f"{label} row {row_no}"
            problems.append(row_to_problem(row, where, question_key, answer_key, id_key, id_prefix))
            wheres.append(where)
    return dedupe_ids(problems, wheres)


def row_to_problem(
    row: Mapping[str, Any],
    where: str,
    question_key: str,
    answer_key: str,
    id_key: str | None,
    id_prefix: str | None = None,
) -> Problem:
    """Map one generic row to a `Problem`; columns other than question/answer/id go to `meta`."""
    question = text_field(row, question_key, where)
    answer = answer_field(row, answer_key, where)
    raw_id = id_field(row, id_key, where) if id_key else content_id(question)
    problem_id = f"{id_prefix}/{raw_id}" if id_prefix else raw_id
    used = {question_key, answer_key, id_key}
    meta = {k: v for k, v in row.items() if k not in used}
    return Problem(id=problem_id, question=question, answer=answer, meta=meta)
