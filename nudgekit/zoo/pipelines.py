"""`ZooBuild`: the Hydra pipeline that builds (or reuses) zoo models (`experiment=zoo_build`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.zoo.registry import NAMES, VARIANTS, read_meta
from nudgekit.zoo.resolve import build_all


class ZooBuild:
    """Build the named zoo models of one variant into the cache.

    Args:
        models: zoo names without variant (default: all of them).
        variant: "full" or "test".
        progress: show tqdm bars while training.
        workers: processes building independent model chains at once (one thread each).
    """

    def __init__(
        self,
        models: list[str] | None = None,
        variant: str = "full",
        progress: bool = True,
        workers: int = 2,
    ):
        models = list(models) if models else list(NAMES)
        bad = [m for m in models if m not in NAMES]
        if bad:
            raise NudgekitError(f"zoo_build: models {bad} not in {list(NAMES)}")
        if variant not in VARIANTS:
            raise NudgekitError(f"zoo_build: variant={variant!r} not in {list(VARIANTS)}")
        self.models, self.variant, self.progress = models, variant, progress
        self.workers = workers

    def run(self, tracker: Any = None, run_dir: Path | str = ".") -> dict[str, float]:
        """Build what is missing; write zoo_build.json (name -> dir, hashes, timings)."""
        start = time.perf_counter()
        record = {}
        built = build_all(
            self.variant, progress=self.progress, workers=self.workers, models=self.models
        )
        for name, path in built.items():
            meta = read_meta(path)
            record[name] = {
                k: meta.get(k)
                for k in (
                    "config_hash",
                    "weight_hash",
                    "n_params",
                    "build_seconds",
                    "cpu_seconds",
                    "final_loss",
                )
            }
            record[name]["path"] = str(path)
        metrics = {"zoo/seconds": time.perf_counter() - start, "zoo/models": float(len(record))}
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "zoo_build.json").write_text(json.dumps(record, indent=2))
        if tracker is not None:
            tracker.log(metrics)
            tracker.log_table("zoo_build", [{"name": k, **v} for k, v in record.items()])
            tracker.summary(metrics)
        return metrics
