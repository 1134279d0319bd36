"""The tiny world: seeded reasoning tasks and a locally trained, hash-cached model zoo.

Public API: `tiny_problems`, `resolve` (``"tiny-policy"`` or ``"tiny-policy@test"``), `build_all`,
the prompt helpers (`chat_prompt`, `base_prompt`, `explain_prompt`, `cue_prompt`, ...) and the
Hydra pipeline `ZooBuild` (training loads lazily). The zoo's check, `TinyWorldCheck`, is
evaluation code: `nudgekit.eval.zoo_check`.
"""

from __future__ import annotations

from typing import Any

from nudgekit.zoo.prompts import (
    base_prompt,
    chat_prompt,
    chat_target,
    cue_message,
    cue_prompt,
    explain_message,
    explain_prompt,
    render_chat,
    user_message,
)
from nudgekit.zoo.registry import NAMES, config_hash, model_dir, read_meta
from nudgekit.zoo.resolve import build_all, resolve
from nudgekit.zoo.tasks import HINT_LEVELS, chain_of, tiny_problems

__all__ = [
    "HINT_LEVELS",
    "NAMES",
    "ZooBuild",
    "base_prompt",
    "build_all",
    "chain_of",
    "chat_prompt",
    "chat_target",
    "config_hash",
    "cue_message",
    "cue_prompt",
    "explain_message",
    "explain_prompt",
    "model_dir",
    "read_meta",
    "render_chat",
    "resolve",
    "tiny_problems",
    "user_message",
]


def __getattr__(name: str) -> Any:
    if name == "ZooBuild":
        from nudgekit.zoo.pipelines import ZooBuild

        return ZooBuild
    raise AttributeError(f"module 'nudgekit.zoo' has no attribute {name!r}")
