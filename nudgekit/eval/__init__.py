"""Evaluation: unbiased pass@k, majority vote, the eval pipeline (its run-dir writers are
`nudgekit.reports`), and readers/analyses of finished runs for the notebooks (`runs`,
`hinting`, `anatomy`).

`EvalPipeline` is imported on first use (PEP 562), so the light parts (metrics, run readers,
analyses) load without torch or `datasets`: a notebook kernel starts in about a second.
"""

from typing import Any

from nudgekit.eval.metrics import majority_vote, mean_ci, mean_pass_at_k, pass_at_k

__all__ = ["EvalPipeline", "majority_vote", "mean_ci", "mean_pass_at_k", "pass_at_k"]


def __getattr__(name: str) -> Any:
    if name == "EvalPipeline":
        from nudgekit.eval.pipeline import EvalPipeline

        return EvalPipeline
    raise AttributeError(f"module 'nudgekit.eval' has no attribute {name!r}")
