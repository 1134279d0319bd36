"""NuRL: offline hint collection, the hint store, and the pass-rate gate (arXiv 2509.25666).

- `HintsPipeline` (`pipeline=hints`): collect hints from a source and write `hints.jsonl`.
- Sources (`HintSource.hints(problems) -> {id: hint}`): `SelfHints` (the policy),
  `EngineHints` (any engine / model), `FileHints` (a file, dataset or earlier store),
  `OracleHints` (the tiny world's four oracle levels).
- `LeakFilter` / `leak_reason`: reject hints that give the answer away.
- `HintStore` / `HintRecord`: hints keyed by problem id with provenance, JSONL on disk.
- `HintLift`: the share of zero-pass problems that the hints make solvable.
- `gate`: pure functions for the zero-pass gate, the G-1 split, the prompt budget and merging.
- `HintInjector`: the gate + G-1 injection as a GRPO rollout hook.
- `PassCurveEval`: hint-free pass@k for k = 1, 2, 4, ..., n (the upper-limit evaluation).
- `NuRLSchedule` (`pipeline=nurl`): hints, stage 1, the 8/8 filter and stage 2 in one run, as
  the GRPO trainer's schedule (`pipeline.schedule`).
"""

from typing import Any

from nudgekit.nurl.evaluate import PassCurveEval, powers_of_two
from nudgekit.nurl.gate import (
    GATES,
    HINTED_PER_GROUP,
    HintDecision,
    check_prompt_budget,
    decision_rows,
    hint_split,
    merge_groups,
    pass_rates,
    select_groups,
)
from nudgekit.nurl.generated import ChatRenderer, EngineHints, SelfHints, collect_with_retries
from nudgekit.nurl.inject import HintInjector
from nudgekit.nurl.leakage import LeakFilter, contains_answer, leak_reason, normalize_answer
from nudgekit.nurl.lift import HintLift
from nudgekit.nurl.pipeline import HintsPipeline
from nudgekit.nurl.sources import (
    HINT_TYPES,
    FileHints,
    HintCollection,
    HintSource,
    OracleHints,
    StoreHints,
)
from nudgekit.nurl.store import HintRecord, HintStore

__all__ = [
    "GATES",
    "HINTED_PER_GROUP",
    "HINT_TYPES",
    "ChatRenderer",
    "EngineHints",
    "FileHints",
    "HintCollection",
    "HintDecision",
    "HintInjector",
    "HintLift",
    "HintRecord",
    "HintSource",
    "HintStore",
    "HintsPipeline",
    "LeakFilter",
    "NuRLSchedule",
    "OracleHints",
    "PassCurveEval",
    "SelfHints",
    "StoreHints",
    "check_prompt_budget",
    "collect_with_retries",
    "contains_answer",
    "decision_rows",
    "hint_split",
    "leak_reason",
    "merge_groups",
    "normalize_answer",
    "pass_rates",
    "powers_of_two",
    "select_groups",
]


def __getattr__(name: str) -> Any:
    if name == "NuRLSchedule":  # lazy: pulls in the GRPO step machinery (torch)
        from nudgekit.nurl.schedule import NuRLSchedule

        return NuRLSchedule
    raise AttributeError(f"module 'nudgekit.nurl' has no attribute {name!r}")
