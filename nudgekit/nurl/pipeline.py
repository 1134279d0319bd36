"""`HintsPipeline`: NuRL's offline hint collection as its own run (`pipeline=hints`).

For every training problem the configured source writes a hint (self / engine / file / oracle),
the leakage filter rejects answer-bearing ones (generated sources regenerate them, up to a limit),
and the accepted hints are written with provenance to `<run_dir>/hints.jsonl`, which a NuRL run
reuses by path (`nurl.hints_path=...`). Also written: `hints_report.json` (counts, rejections by
reason, dropped problem ids and why). Departure from the paper: nothing, except that dropped
problems are listed rather than silently missing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError
from nudgekit.nurl.lift import HintLift
from nudgekit.nurl.sources import CollectingSource, HintCollection

log = logging.getLogger(__name__)

STORE_FILE = "hints.jsonl"
REPORT_FILE = "hints_report.json"


def collection_metrics(collection: HintCollection, n_problems: int, seconds: float) -> dict:
    """`hints/*` metrics of one collection."""
    accepted = len(collection.records)
    metrics: dict[str, float] = {
        "hints/problems": float(n_problems),
        "hints/accepted": float(accepted),
        "hints/dropped": float(len(collection.dropped)),
        "hints/yield": accepted / n_problems if n_problems else 0.0,
        "hints/generations": float(collection.generations),
        "hints/rejected": float(sum(collection.rejections.values())),
        "hints/mean_attempts": (
            sum(r.attempts for r in collection.records) / accepted if accepted else 0.0
        ),
        "hints/first_try_frac": (
            sum(r.attempts == 1 for r in collection.records) / n_problems if n_problems else 0.0
        ),
        "hints/seconds": seconds,
    }
    for reason, count in sorted(collection.rejections.items()):
        metrics[f"hints/rejected_{reason}"] = float(count)
    return metrics


class HintsPipeline:
    """Collect hints for a problem set and write the hint store.

    Args:
        problems: the training problems.
        source: a hint source with `collect(problems)` (`SelfHints`, `EngineHints`,
            `FileHints`, `OracleHints`).
        store_file: file name of the store inside the run dir.
        table_rows: hints logged as a tracker table.
        lift: optional `HintLift`: measure, on the problems with 0/n un-hinted successes, how
            many the hints lift to >= 1/n (adds `lift/*` metrics).
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        source: CollectingSource,
        store_file: str = STORE_FILE,
        table_rows: int = 32,
        lift: HintLift | None = None,
    ) -> None:
        if not problems:
            raise NudgekitError("hints: the problem set is empty")
        if not hasattr(source, "collect"):
            raise NudgekitError(f"hints: source {type(source).__name__} has no collect()")
        self.problems, self.source = list(problems), source
        self.store_file, self.table_rows, self.lift = store_file, table_rows, lift

    def run(self, tracker: Any = None, run_dir: str | Path | None = None) -> dict[str, float]:
        """Collect, write `hints.jsonl` + `hints_report.json`, log metrics and a table."""
        run_dir = Path(run_dir if run_dir is not None else ".")
        start = time.perf_counter()
        collection = self.source.collect(self.problems)
        metrics = collection_metrics(collection, len(self.problems), time.perf_counter() - start)
        path = collection.store.save(run_dir / self.store_file)
        if self.lift is not None:
            metrics.update(self.lift.measure(self.problems, collection.store))
        report = {
            "store": str(path),
            "metrics": metrics,
            "rejections": dict(collection.rejections),
            "dropped": collection.dropped,
        }
        (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
        log.info(
            "hints: %d/%d accepted (%s) -> %s",
            len(collection.records),
            len(self.problems),
            dict(collection.rejections),
            path,
        )
        if tracker is not None:
            tracker.log(metrics)
            question = {p.id: p.question for p in self.problems}
            rows = [
                {
                    "id": r.id,
                    "question": question.get(r.id, ""),
                    "hint": r.hint,
                    "type": r.type,
                    "source": r.source,
                    "attempts": r.attempts,
                }
                for r in collection.records[: self.table_rows]
            ]
            tracker.log_table("hints/samples", rows)
        return metrics
