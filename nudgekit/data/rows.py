"""Pure helpers that turn one raw source row into `Problem` fields, or fail with one line.

Every error names where the row came from (`where`, e.g. ``"data/x.jsonl row 17"``; rows are
numbered from 1, the first record of a file being row 1) and the field at fault, so a bad row in a
50k-row file is found without a traceback. Ids are derived from row content or a source id, never
from position, so they survive shuffling and re-exports.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError

_ID_HASH_CHARS = 12  # 48 bits: collision odds for 1e6 problems are ~2e-3; collisions are checked


def format_number(value: int | float) -> str:
    """Render a numeric answer the way a person writes it (`8.0` -> `"8"`, `2.5` -> `"2.5"`).

    Args:
        value: an int or finite float.

    Returns:
        The shortest exact decimal text; integral floats lose their `.0`.
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def strip_leading_zeros(text: str) -> str:
    """`"025"` -> `"25"` for all-digit answers (AIME pads to three digits); other text unchanged."""
    if text.isdigit() and len(text) > 1:
        return text.lstrip("0") or "0"
    return text


def content_id(text: str, prefix: str | None = None) -> str:
    """A stable id from content: the first 12 hex chars of sha1(text), optionally `prefix/`."""
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:_ID_HASH_CHARS]
    return f"{prefix}/{digest}" if prefix else digest


def _columns_hint(row: Mapping[str, Any]) -> str:
    present = [k for k, v in row.items() if v is not None]
    return f" (row has: {', '.join(present) or 'nothing'})"


def require(row: Mapping[str, Any], keys: str | Sequence[str], where: str) -> tuple[str, Any]:
    """Return `(key, value)` for the first of `keys` present and non-null in `row`.

    Args:
        row: one source record.
        keys: the field name, or alternatives tried in order (e.g. ``("problem", "question")``).
        where: location prefix for errors, e.g. ``"x.jsonl row 3"``.

    Returns:
        The key that matched and its value.

    Raises:
        NudgekitError: none of `keys` is present (columnar loaders turn absent fields into null).
    """
    names = [keys] if isinstance(keys, str) else list(keys)
    for key in names:
        if row.get(key) is not None:
            return key, row[key]
    wanted = " or ".join(f"'{k}'" for k in names)
    raise NudgekitError(f"{where}: missing field {wanted}{_columns_hint(row)}")


def text_field(row: Mapping[str, Any], keys: str | Sequence[str], where: str) -> str:
    """A required non-empty string field (surrounding whitespace stripped)."""
    key, value = require(row, keys, where)
    if not isinstance(value, str):
        raise NudgekitError(f"{where}: field '{key}' has type {type(value).__name__}, expected str")
    if not value.strip():
        raise NudgekitError(f"{where}: field '{key}' is empty")
    return value.strip()


def answer_field(row: Mapping[str, Any], keys: str | Sequence[str], where: str) -> str:
    """A required answer: a non-empty string, or a finite number rendered by `format_number`."""
    key, value = require(row, keys, where)
    # bool is an int subclass, but True/False as a gold answer is almost surely a wrong column.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise NudgekitError(f"{where}: field '{key}' is {value}, expected a finite number")
        return format_number(value)
    if not isinstance(value, str):
        raise NudgekitError(
            f"{where}: field '{key}' has type {type(value).__name__}, expected str/number"
        )
    if not value.strip():
        raise NudgekitError(f"{where}: field '{key}' is empty")
    return value.strip()


def id_field(row: Mapping[str, Any], key: str, where: str) -> str:
    """A source id: a non-empty string or an integer, returned as text."""
    _, value = require(row, key, where)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise NudgekitError(
            f"{where}: field '{key}' has type {type(value).__name__}, expected str/int"
        )
    text = str(value).strip()
    if not text:
        raise NudgekitError(f"{where}: field '{key}' is empty")
    return text


def dedupe_ids(problems: Iterable[Problem], wheres: Sequence[str]) -> list[Problem]:
    """Make ids unique, refusing real conflicts.

    Exact duplicates (same id, question and answer; MultiArith ships 20 such pairs) keep the first
    id and get ``#2``, ``#3``... in order. Because the duplicates are identical, which copy gets
    the suffix does not matter, so the id -> (question, answer) map is still independent of row
    order.

    Args:
        problems: the problems of one source, in source order.
        wheres: the location of each problem (same order), used in the conflict error.

    Returns:
        The problems with unique ids.

    Raises:
        NudgekitError: two rows share an id but differ in question or answer.
    """
    first: dict[str, tuple[Problem, str]] = {}
    copies: dict[str, int] = {}
    out: list[Problem] = []
    for problem, where in zip(problems, wheres, strict=True):
        seen = first.get(problem.id)
        if seen is None:
            first[problem.id] = (problem, where)
            out.append(problem)
            continue
        other, other_where = seen
        if (other.question, other.answer) != (problem.question, problem.answer):
            raise NudgekitError(
                f"{where}: id '{problem.id}' already used by {other_where} for a different "
                "question/answer"
            )
        copies[problem.id] = copies.get(problem.id, 1) + 1
        out.append(_with_id(problem, f"{problem.id}#{copies[problem.id]}"))
    return out


def _with_id(problem: Problem, new_id: str) -> Problem:
    return Problem(new_id, problem.question, problem.answer, problem.hint, dict(problem.meta))
