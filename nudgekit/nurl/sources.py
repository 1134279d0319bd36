"""Hint sources: the `HintSource` protocol and the `oracle` and `file` implementations.

Every source answers `hints(problems) -> {problem id: hint}` (the design contract) and, for the
collection pipeline, `collect(problems) -> HintCollection`: the accepted records with provenance,
the problems dropped (and why), and every rejection counted by reason. Generated sources
(`self`, `engine`) live in `nudgekit.nurl.generated`.

- `OracleHints`: the tiny world's oracle hints (`problem.meta["hints"][type]`, four levels).
- `FileHints`: any JSONL/JSON/parquet file or hub dataset with an id and a hint column; a hint
  store written by the hints pipeline is such a file, so a collection is reused by path.

Oracle and file hints cannot be regenerated: a leaking one is dropped after its one attempt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError
from nudgekit.nurl.store import HintRecord, HintStore

HINT_TYPES = ("abstract", "partial", "full", "answer")
LeakCheck = Callable[[str | None, str, str], str | None]


@runtime_checkable
class HintSource(Protocol):
    """Anything that writes hints for problems."""

    def hints(self, problems: Sequence[Problem]) -> dict[str, str]: ...


@dataclass
class HintCollection:
    """What one collection produced.

    Args:
        records: accepted hints with provenance.
        dropped: problem id -> the rejection reason of every attempt (all failed).
        rejections: every rejected attempt counted by reason (accepted and dropped problems).
        generations: hint generations made (attempts over all problems).
    """

    records: list[HintRecord] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    rejections: Counter = field(default_factory=Counter)
    generations: int = 0

    @property
    def store(self) -> HintStore:
        return HintStore(self.records)


class CollectingSource:
    """Base for sources: `hints()` is `collect()` without the provenance."""

    def collect(self, problems: Sequence[Problem]) -> HintCollection:
        raise NotImplementedError

    def hints(self, problems: Sequence[Problem]) -> dict[str, str]:
        return {r.id: r.hint for r in self.collect(problems).records}


def check_hint_type(hint_type: str, where: str) -> str:
    if hint_type not in HINT_TYPES:
        raise NudgekitError(f"{where}: hint type {hint_type!r} is not one of {list(HINT_TYPES)}")
    return hint_type


def filter_once(
    problems: Sequence[Problem],
    found: dict[str, str],
    *,
    hint_type: str,
    source: str,
    leak_filter: LeakCheck | None,
    model: str | None = None,
) -> HintCollection:
    """One attempt per problem: keep hints that pass `leak_filter`, drop the rest.

    Args:
        problems: the problems asked for.
        found: problem id -> hint text (a missing id is dropped with reason "missing").
        hint_type: the type recorded in provenance.
        source: the source name recorded in provenance.
        leak_filter: `(hint, answer, type) -> reason | None`; None accepts every non-empty hint.
        model: provenance (the file or model the hints came from).
    """
    out = HintCollection()
    for p in problems:
        hint = found.get(p.id)
        if hint is None:
            out.dropped[p.id] = ["missing"]
            continue
        out.generations += 1
        reason = leak_filter(hint, p.answer, hint_type) if leak_filter else _empty(hint)
        if reason is not None:
            out.rejections[reason] += 1
            out.dropped[p.id] = [reason]
            continue
        out.records.append(
            HintRecord(
                id=p.id, hint=hint.strip(), type=hint_type, source=source, attempts=1, model=model
            )
        )
    return out


def _empty(hint: str) -> str | None:
    return None if hint.strip() else "empty"


class OracleHints(CollectingSource):
    """The tiny world's oracle hints at one abstraction level.

    Args:
        type: "abstract", "partial", "full" or "answer" (`problem.meta["hints"][type]`).
        leak_filter: rejects leaking hints (None: keep all).
    """

    def __init__(self, type: str = "abstract", leak_filter: LeakCheck | None = None) -> None:
        self.type = check_hint_type(type, "oracle hints")
        self.leak_filter = leak_filter

    def collect(self, problems: Sequence[Problem]) -> HintCollection:
        found = {}
        for p in problems:
            oracle = (p.meta or {}).get("hints")
            if not isinstance(oracle, dict) or self.type not in oracle:
                raise NudgekitError(
                    f"oracle hints: problem {p.id} has no meta['hints'][{self.type!r}] "
                    "(oracle hints exist for tiny-world problems only)"
                )
            found[p.id] = str(oracle[self.type])
        return filter_once(
            problems,
            found,
            hint_type=self.type,
            source="oracle",
            leak_filter=self.leak_filter,
            model="oracle",
        )


class FileHints(CollectingSource):
    """Hints read from a file or dataset: one row per problem id.

    Args:
        path: a .jsonl/.json/.parquet file, a folder, or a hub dataset id (a hint store from the
            hints pipeline works as is).
        type: the hint type to record (rows with their own `type` column keep theirs).
        id_key: column holding the problem id.
        hint_key: column holding the hint text.
        split: split to read from a folder or hub dataset.
        leak_filter: rejects leaking hints (None: keep all).
    """

    def __init__(
        self,
        path: str,
        type: str = "abstract",
        id_key: str = "id",
        hint_key: str = "hint",
        split: str = "train",
        leak_filter: LeakCheck | None = None,
    ) -> None:
        self.path, self.type = str(path), check_hint_type(type, f"file hints {path}")
        self.id_key, self.hint_key, self.split = id_key, hint_key, split
        self.leak_filter = leak_filter

    def read(self) -> tuple[dict[str, str], dict[str, str]]:
        """`(id -> hint, id -> type)` from the file; one-line errors name file, row and key."""
        from nudgekit.data.sources import read_source

        hints: dict[str, str] = {}
        types: dict[str, str] = {}
        for label, dataset in read_source(self.path, split=self.split):
            for row_no, row in enumerate(dataset, start=1):
                where = f"{label} row {row_no}"
                for key in (self.id_key, self.hint_key):
                    value = row.get(key)
                    if not isinstance(value, str) or not value.strip():
                        raise NudgekitError(f"{where}: '{key}' must be a non-empty string")
                hints[row[self.id_key]] = row[self.hint_key]
                types[row[self.id_key]] = str(row.get("type") or self.type)
        return hints, types

    def collect(self, problems: Sequence[Problem]) -> HintCollection:
        hints, types = self.read()
        out = HintCollection()
        by_type: dict[str, list[Problem]] = {}
        for p in problems:
            by_type.setdefault(types.get(p.id, self.type), []).append(p)
        for hint_type, group in by_type.items():
            part = filter_once(
                group,
                hints,
                hint_type=hint_type,
                source="file",
                leak_filter=self.leak_filter,
                model=self.path,
            )
            out.records += part.records
            out.dropped.update(part.dropped)
            out.rejections.update(part.rejections)
            out.generations += part.generations
        return out


class StoreHints(CollectingSource):
    """Hints from a `HintStore` already in memory (e.g. restored from a checkpoint)."""

    def __init__(self, store: HintStore) -> None:
        self.store = store

    def collect(self, problems: Sequence[Problem]) -> HintCollection:
        out = HintCollection()
        for p in problems:
            record = self.store.get(p.id)
            if record is None:
                out.dropped[p.id] = ["missing"]
            else:
                out.records.append(record)
        return out
