"""Evaluation: unbiased pass@k, majority vote, the eval pipeline, reports and plots."""

from nudgekit.eval.metrics import majority_vote, mean_ci, mean_pass_at_k, pass_at_k
from nudgekit.eval.pipeline import EvalPipeline

__all__ = ["EvalPipeline", "majority_vote", "mean_ci", "mean_pass_at_k", "pass_at_k"]
