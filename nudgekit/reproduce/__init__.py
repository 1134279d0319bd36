"""`make reproduce`: a fixed, versioned list of `run.py` stages, a cached DAG scheduler that runs
them two at a time, and a results writer that turns the stage run dirs into
`experiments/results/*.md` and plots."""

from nudgekit.reproduce.cache import stage_keys
from nudgekit.reproduce.scheduler import Scheduler, StageResult
from nudgekit.reproduce.stages import PROFILES, STAGE_LIST_VERSION, Stage, build_stages

__all__ = [
    "PROFILES",
    "STAGE_LIST_VERSION",
    "Scheduler",
    "Stage",
    "StageResult",
    "build_stages",
    "stage_keys",
]
