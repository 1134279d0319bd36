"""`HintStore`: hints keyed by problem id, with provenance, saved as JSONL and reusable by path.

One line per problem that got a usable hint:

    {"id": "tiny/ab12...", "hint": "inc then dec cancel out.", "type": "abstract",
     "source": "self", "attempts": 2, "rejections": ["contains_answer"], "model": "zoo:..."}

`attempts` counts generations (1 = the first hint was kept); `rejections` lists why each earlier
attempt was rejected. Problems whose hints were all rejected are not in the store (the
collection's `dropped` says why). The store is training data only: nothing in evaluation reads
it, and `Problem.hint` is never set from it, so a hint can only enter a prompt through the NuRL
gate. A NuRL checkpoint holds it as `step-N/hints.jsonl` (written by `save`, in the manifest);
`state_dict`/`from_state` read the JSON list older checkpoints kept in their trainer state.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nudgekit.errors import NudgekitError

REQUIRED_KEYS = ("id", "hint")


@dataclass
class HintRecord:
    """One accepted hint and where it came from.

    Args:
        id: the `Problem.id` it belongs to.
        hint: the hint text.
        type: "abstract", "partial", "full" or "answer".
        source: "self", "engine", "file" or "oracle".
        attempts: generations it took (1 = first try accepted).
        rejections: the reason each rejected attempt failed, in order.
        model: the model (or file) that produced it, when known.
        explanation: the explanation the hint was written from (generated sources).
    """

    id: str
    hint: str
    type: str = "abstract"
    source: str = "file"
    attempts: int = 1
    rejections: list[str] = field(default_factory=list)
    model: str | None = None
    explanation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class HintStore:
    """A mapping problem id -> `HintRecord`.

    Args:
        records: the records (a later record for the same id replaces an earlier one).
    """

    def __init__(self, records: Iterable[HintRecord] = ()) -> None:
        self._records: dict[str, HintRecord] = {}
        for record in records:
            self.add(record)

    def add(self, record: HintRecord) -> None:
        self._records[record.id] = record

    def get(self, problem_id: str) -> HintRecord | None:
        return self._records.get(problem_id)

    def hint(self, problem_id: str) -> str | None:
        """The hint text for a problem, or None when it has none."""
        record = self._records.get(problem_id)
        return record.hint if record is not None else None

    def hints(self) -> dict[str, str]:
        return {k: r.hint for k, r in self._records.items()}

    def __contains__(self, problem_id: object) -> bool:
        return problem_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[HintRecord]:
        return iter(self._records.values())

    def stats(self) -> dict[str, float]:
        """Counts by source and type, and the mean number of attempts."""
        out: dict[str, float] = {"hints": float(len(self))}
        for key, count in Counter(r.source for r in self).items():
            out[f"source/{key}"] = float(count)
        for key, count in Counter(r.type for r in self).items():
            out[f"type/{key}"] = float(count)
        out["mean_attempts"] = sum(r.attempts for r in self) / len(self) if len(self) else 0.0
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write the store as JSONL, atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            for record in self:
                f.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> HintStore:
        """Read a store written by `save` (or any JSONL with at least `id` and `hint`).

        Raises:
            NudgekitError: missing file, bad JSON or a bad row, as one line naming file and line.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise NudgekitError(f"hint store {path}: no such file")
        store = cls()
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    store.add(parse_record(line, f"{path} line {line_no}"))
        return store

    def state_dict(self) -> list[dict[str, Any]]:
        """JSON-able form for checkpoints."""
        return [r.to_json() for r in self]

    @classmethod
    def from_state(cls, state: list[dict[str, Any]] | None) -> HintStore:
        return cls(
            record_from_dict(row, f"checkpoint hint store row {i}")
            for i, row in enumerate(state or [], start=1)
        )


def parse_record(line: str, where: str) -> HintRecord:
    """One JSONL line -> `HintRecord` (errors name `where`)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise NudgekitError(f"{where}: invalid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise NudgekitError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return record_from_dict(row, where)


def record_from_dict(row: dict[str, Any], where: str) -> HintRecord:
    """Validate a row's keys and types and build the record."""
    for key in REQUIRED_KEYS:
        if key not in row:
            raise NudgekitError(f"{where}: missing key '{key}'")
        if not isinstance(row[key], str) or not row[key].strip():
            raise NudgekitError(f"{where}: '{key}' must be a non-empty string")
    known = set(HintRecord.__dataclass_fields__)
    kwargs = {k: v for k, v in row.items() if k in known}
    attempts = kwargs.get("attempts", 1)
    if not isinstance(attempts, int) or attempts < 1:
        raise NudgekitError(f"{where}: 'attempts' must be an int >= 1, got {attempts!r}")
    if not isinstance(kwargs.get("rejections", []), list):
        raise NudgekitError(f"{where}: 'rejections' must be a list")
    return HintRecord(**kwargs)
