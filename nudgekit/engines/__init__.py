"""Generation engines behind one protocol (`Engine.generate(requests) -> results`).

`HFEngine` (in-process transformers) is imported lazily so that importing the contract does not
pull in torch-heavy code; `vllm` and `openai` engines live in their own modules.
"""

from __future__ import annotations

from typing import Any

from nudgekit.engines.base import Engine, FinishReason, GenerationRequest, GenerationResult, Sample

__all__ = [
    "Engine",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "HFEngine",
    "OpenAIEngine",
    "Sample",
    "VLLMEngine",
]


def __getattr__(name: str) -> Any:
    if name == "HFEngine":
        from nudgekit.engines.hf import HFEngine

        return HFEngine
    if name == "OpenAIEngine":
        from nudgekit.engines.openai import OpenAIEngine

        return OpenAIEngine
    if name == "VLLMEngine":
        from nudgekit.engines.vllm import VLLMEngine

        return VLLMEngine
    raise AttributeError(f"module 'nudgekit.engines' has no attribute {name!r}")
