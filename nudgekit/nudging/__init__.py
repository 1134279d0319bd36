"""Inference-time nudging (arXiv 2410.09300): a large base model and a small aligned model
decode one answer together; the small model writes only where the base model is uncertain.

- `ChunkedNudgingDecoder`: the reference algorithm over any `Engine`, one call per step.
- `CachedNudgingDecoder`: the same outputs from resident models with per-row KV caches, one
  base pass per draft, cross-tokenizer by text, continuously batched.
- `ProxyTuningDecoder` and `generate_texts`: the baselines; `NudgingPipeline`: the experiment;
  `NudgingPrompt`: both models' prompts as the reference builds them.
- `rules`: the algorithm's decisions as pure functions; `attribution`: who wrote which span.
"""

from nudgekit.nudging.attribution import NudgeOutput, Span, run_stats
from nudgekit.nudging.baselines import ProxyTuningDecoder, generate_texts
from nudgekit.nudging.cached import CachedNudgingDecoder
from nudgekit.nudging.pipeline import NudgingPipeline
from nudgekit.nudging.prompts import NudgingPrompt
from nudgekit.nudging.reference import ChunkedNudgingDecoder

__all__ = [
    "CachedNudgingDecoder",
    "ChunkedNudgingDecoder",
    "NudgeOutput",
    "NudgingPipeline",
    "NudgingPrompt",
    "ProxyTuningDecoder",
    "Span",
    "generate_texts",
    "run_stats",
]
