"""Benchmark registry: `load_benchmark("gsm8k")` -> validated `Problem`s with stable ids.

Each benchmark is a row converter `(row, where) -> Problem` registered with
`@register_benchmark(name, hub=...)`, or a whole loader `(path, limit) -> list[Problem]`
registered with `@register_benchmark_loader(name)` (for generated data such as the tiny world).
Files default to `<data dir>/<name>/test.jsonl`, the data dir being `$NUDGEKIT_DATA` or
`<repo>/../shared/data`; when that file is absent and no path was given, the recorded hub dataset
is used instead (needs network or the local hub cache).

Answer conventions: gsm8k keeps the number after `####` with thousands separators removed
(`"2,125"` -> `"2125"`, the full solution in `meta["solution"]`); numeric answers drop a trailing
`.0`; AIME answers drop their zero padding (`"025"` -> `"25"`, original in `meta["answer_raw"]`).
Ids are `<name>/<source id>` where the source has one, else `<name>/<sha1(question)[:12]>`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.data.rows import (
    answer_field,
    content_id,
    dedupe_ids,
    id_field,
    strip_leading_zeros,
    text_field,
)
from nudgekit.data.sources import read_hub, read_source
from nudgekit.errors import NudgekitError

RowConverter = Callable[[Mapping[str, Any], str], Problem]
Loader = Callable[[str | None, int | None], list[Problem]]


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark.

    Args:
        name: registry key, also the id prefix and the folder name under the data dir.
        convert: row converter for file/hub-backed benchmarks.
        loader: a whole loader, used instead of files when set.
        hub: hub dataset id used when the local file is absent.
        hub_config: hub dataset configuration.
        hub_split: hub split holding the benchmark.
        filename: file name inside `<data dir>/<name>/`.
    """

    name: str
    convert: RowConverter | None = None
    loader: Loader | None = None
    hub: str | None = None
    hub_config: str | None = None
    hub_split: str = "test"
    filename: str = "test.jsonl"

    def load(self, path: str | None = None, limit: int | None = None) -> list[Problem]:
        """Load the benchmark from `path` (default file, else the hub); see `load_benchmark`."""
        if self.loader is not None:
            return self.loader(path, limit)
        assert self.convert is not None  # guaranteed by the registration helpers
        if path is None:
            default = default_data_dir() / self.name / self.filename
            use_hub = self.hub is not None and not default.exists()
            path = self.hub if use_hub else str(default)
        if path == self.hub:
            dataset = read_hub(self.hub, split=self.hub_split, name=self.hub_config)
            return self._convert_all([(f"{self.hub} (hub)", dataset)], limit)
        return self._convert_all(read_source(path, split="test"), limit)

    def _convert_all(self, sources: list, limit: int | None) -> list[Problem]:
        problems: list[Problem] = []
        wheres: list[str] = []
        for label, dataset in sources:
            for row_no, row in enumerate(dataset, start=1):
                if limit is not None and len(problems) >= limit:
                    break
                wheres.append(f"{label} row {row_no}")
                problems.append(self.convert(row, wheres[-1]))
        return dedupe_ids(problems, wheres)


BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(
    name: str,
    *,
    hub: str | None = None,
    hub_config: str | None = None,
    hub_split: str = "test",
    filename: str = "test.jsonl",
    overwrite: bool = False,
) -> Callable[[RowConverter], RowConverter]:
    """Decorator registering a row converter `(row, where) -> Problem` under `name`.

    Args:
        name: registry key.
        hub: hub dataset id used when the local file is missing.
        hub_config: hub configuration name.
        hub_split: hub split.
        filename: file inside `<data dir>/<name>/`.
        overwrite: replace an existing entry instead of refusing.
    """

    def decorate(convert: RowConverter) -> RowConverter:
        _add(
            Benchmark(
                name,
                convert=convert,
                hub=hub,
                hub_config=hub_config,
                hub_split=hub_split,
                filename=filename,
            ),
            overwrite,
        )
        return convert

    return decorate


def register_benchmark_loader(name: str, *, overwrite: bool = False) -> Callable[[Loader], Loader]:
    """Decorator registering a whole loader `(path, limit) -> list[Problem]` under `name`."""

    def decorate(loader: Loader) -> Loader:
        _add(Benchmark(name, loader=loader), overwrite)
        return loader

    return decorate


def _add(benchmark: Benchmark, overwrite: bool) -> None:
    if benchmark.name in BENCHMARKS and not overwrite:
        raise ValueError(f"benchmark '{benchmark.name}' is already registered")
    BENCHMARKS[benchmark.name] = benchmark


def load_benchmark(
    name: str, path: str | None = None, *, limit: int | None = None
) -> list[Problem]:
    """Load a registered benchmark as `Problem`s with stable, unique ids.

    Args:
        name: one of `BENCHMARKS` (gsm8k, math500, svamp, multiarith, aime24, amc23, ...).
        path: a file or folder in the benchmark's source format; None uses
            `<data dir>/<name>/test.jsonl`, falling back to the hub dataset when that is absent.
        limit: keep the first `limit` rows in source order.

    Returns:
        The problems, in source order.

    Raises:
        NudgekitError: unknown name (the message lists known ones), missing file, bad row.
    """
    benchmark = BENCHMARKS.get(name)
    if benchmark is None:
        raise NudgekitError(f"unknown benchmark '{name}' (known: {', '.join(sorted(BENCHMARKS))})")
    if limit is not None and limit < 0:
        raise NudgekitError(f"benchmark '{name}': limit must be >= 0, got {limit}")
    return benchmark.load(path, limit)


def default_data_dir() -> Path:
    """`$NUDGEKIT_DATA`, else `<repo root>/../shared/data` (repo root = parent of the package)."""
    env = os.environ.get("NUDGEKIT_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _meta(row: Mapping[str, Any], *skip: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in skip and v is not None}


@register_benchmark("gsm8k", hub="openai/gsm8k", hub_config="main")
def gsm8k(row: Mapping[str, Any], where: str) -> Problem:
    """GSM8K: the answer is the number after the last `####`; the solution goes to meta."""
    question = text_field(row, "question", where)
    solution = text_field(row, "answer", where)
    if "####" not in solution:
        raise NudgekitError(f"{where}: field 'answer' has no '#### <number>' final line")
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not answer:
        raise NudgekitError(f"{where}: field 'answer' has nothing after '####'")
    meta = {**_meta(row, "question", "answer"), "solution": solution}
    return Problem(content_id(question, "gsm8k"), question, answer, meta=meta)


@register_benchmark("math500", hub="HuggingFaceH4/MATH-500")
def math500(row: Mapping[str, Any], where: str) -> Problem:
    """MATH-500: `problem`/`answer`, id from `unique_id` (e.g. `test/algebra/1349.json`)."""
    question = text_field(row, "problem", where)
    answer = answer_field(row, "answer", where)
    source_id = id_field(row, "unique_id", where)
    meta = _meta(row, "problem", "answer", "unique_id")
    return Problem(f"math500/{source_id}", question, answer, meta=meta)


# The hub copies split SVAMP 700/300 and MultiArith 420/180; train+test is the full set the
# local files hold, so both sources give the same problems.
@register_benchmark("svamp", hub="ChilleD/SVAMP", hub_split="train+test")
def svamp(row: Mapping[str, Any], where: str) -> Problem:
    """SVAMP: question = Body + ' ' + Question, answer = Answer (`145.0` -> `"145"`), id = ID."""
    body = text_field(row, "Body", where)
    question = f"{body} {text_field(row, 'Question', where)}"
    answer = answer_field(row, "Answer", where)
    source_id = id_field(row, "ID", where)
    meta = _meta(row, "Body", "Question", "Answer", "ID")
    return Problem(f"svamp/{source_id}", question, answer, meta=meta)


@register_benchmark("multiarith", hub="ChilleD/MultiArith", hub_split="train+test")
def multiarith(row: Mapping[str, Any], where: str) -> Problem:
    """MultiArith: `input`/`target` (hub copies use `question`/`final_ans`); content-hash ids."""
    question = text_field(row, ("input", "question"), where)
    answer = answer_field(row, ("target", "final_ans", "answer"), where)
    meta = _meta(row, "input", "question", "target", "final_ans", "answer")
    return Problem(content_id(question, "multiarith"), question, answer, meta=meta)


@register_benchmark("aime24", hub="HuggingFaceH4/aime_2024", hub_split="train")
def aime24(row: Mapping[str, Any], where: str) -> Problem:
    """AIME 2024: `problem`/`answer`/`id`; zero padding is dropped from the answer."""
    question = text_field(row, ("problem", "question"), where)
    raw = answer_field(row, "answer", where)
    source_id = id_field(row, "id", where)
    meta = {**_meta(row, "problem", "question", "answer", "id"), "answer_raw": raw}
    return Problem(f"aime24/{source_id}", question, strip_leading_zeros(raw), meta=meta)


@register_benchmark("amc23", hub="math-ai/amc23")
def amc23(row: Mapping[str, Any], where: str) -> Problem:
    """AMC 2023: `problem` or `question`, numeric `answer` (`27.0` -> `"27"`), id = `id`."""
    question = text_field(row, ("problem", "question"), where)
    answer = answer_field(row, "answer", where)
    source_id = id_field(row, "id", where)
    meta = _meta(row, "problem", "question", "answer", "id")
    return Problem(f"amc23/{source_id}", question, answer, meta=meta)
